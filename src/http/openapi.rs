//! The OpenAPI 3.1 document: routes and types from the code (utoipa; each route declared
//! once, where the router takes it, by `utoipa_axum::routes!`), plus the request
//! schema of the default model, generated from its graph and card at start-up, with the
//! card's example (the Flask prediction API's record for `santander`).

use serde_json::{json, Map, Value};
use utoipa::OpenApi;

use super::{drift, health, lifecycle, models, predict, v2};

use crate::{
    http::error::{ErrorBody, ErrorDetail, FieldError},
    model::{schema::Field, ElementType},
    serving::load::LoadedModel,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ml-api",
        description = "ONNX model serving: the Flask prediction API's `POST /predict`, validated, documented, measured and protected."
    ),
    components(schemas(
        predict::PredictRequest,
        predict::PredictResponse,
        predict::RankedLabel,
        ErrorBody,
        ErrorDetail,
        FieldError,
        super::keys::CreateKey,
        super::keys::CreatedKey,
        super::keys::KeyList,
        crate::quota::ApiKey,
        health::Health,
        models::Created,
        crate::datasets::DatasetRecord,
        crate::datasets::ColumnInfo,
        crate::datasets::ColumnType,
        crate::datasets::Format,
        lifecycle::AliasTarget,
        lifecycle::AliasState,
        lifecycle::Comparison,
        lifecycle::Side,
        lifecycle::PromoteGate,
        lifecycle::GateRefusal,
        lifecycle::Promoted,
        drift::DriftResponse,
        crate::drift::DriftReport,
        crate::drift::FeatureDrift,
        v2::tensor::InferRequest,
        v2::tensor::InputTensor,
        v2::tensor::RequestedOutput,
        v2::tensor::InferResponse,
        v2::tensor::OutputTensor,
        v2::IndexEntry,
        crate::registry::ModelRecord,
        crate::registry::ModelStatus,
        crate::registry::Progress
    )),
    tags(
        (name = "predict", description = "Predictions with the default model"),
        (name = "models", description = "Training, the model registry, and predictions by model"),
        (name = "v2", description = "Open Inference Protocol (KServe V2) over REST, for every registry model"),
        (name = "keys", description = "API keys with per-key quotas shared by every replica (admin)"),
        (name = "operations", description = "Probes and metrics")
    )
)]
pub struct ApiDoc;

/// The full document for this replica, as JSON (utoipa's typed schema cannot hold every
/// JSON-Schema 2020-12 construct we generate, such as `"type": ["number", "null"]`): `doc`
/// holds the routes as the router declared them (`utoipa_axum::routes!` in each resource
/// module), this adds the default model's request schema.
pub fn document(
    mut doc: utoipa::openapi::OpenApi,
    default_model: Option<&LoadedModel>,
    max_batch_records: usize,
) -> Value {
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut doc = serde_json::to_value(doc).unwrap_or_else(|_| json!({}));
    let Some(model) = default_model else {
        return doc;
    };
    let record = record_schema(model);
    let example = model.card.example.clone().unwrap_or(Value::Null);
    let request = json!({
        "description": format!(
            "One `{}` record, or an array of 1 to {max_batch_records} records (a batch).",
            model.name
        ),
        "oneOf": [
            { "$ref": "#/components/schemas/PredictRecord" },
            { "type": "array", "items": { "$ref": "#/components/schemas/PredictRecord" },
              "minItems": 1, "maxItems": max_batch_records }
        ],
        "examples": [example]
    });
    if let Some(parameters) = doc
        .pointer_mut("/paths/~1predict/post/parameters")
        .and_then(Value::as_array_mut)
    {
        for parameter in parameters.iter_mut().filter(|p| p["name"] == "top_k") {
            parameter["schema"]["maximum"] = json!(model.schema.labels.len().max(1));
        }
    }
    // Swagger UI's "Try it out" starts from the media type's example.
    if let Some(media) = doc
        .pointer_mut("/paths/~1predict/post/requestBody/content/application~1json")
        .and_then(Value::as_object_mut)
    {
        media.insert("example".to_owned(), example.clone());
    }
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        schemas.insert("PredictRecord".to_owned(), record);
        schemas.insert("PredictRequest".to_owned(), request);
    }
    doc
}

fn record_schema(model: &LoadedModel) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for field in &model.schema.fields {
        if !field.nullable {
            required.push(Value::from(field.name.clone()));
        }
        properties.insert(field.name.clone(), field_schema(field));
    }
    for (name, why) in &model.card.ignored_fields {
        properties.insert(
            name.clone(),
            json!({ "description": format!("Accepted and ignored: {why}") }),
        );
    }
    let mut schema = json!({
        "type": "object",
        "description": model.card.description.clone().unwrap_or_else(|| format!("A record for model `{}`.", model.name)),
        "required": required,
        "properties": properties,
        "additionalProperties": true,
    });
    if let Some(example) = &model.card.example {
        schema["examples"] = json!([example]);
    }
    schema
}

fn field_schema(field: &Field) -> Value {
    let mut schema = Map::new();
    let json_type = field.element.json_type();
    schema.insert(
        "type".into(),
        if field.nullable {
            json!([json_type, "null"])
        } else {
            json!(json_type)
        },
    );
    let mut description = field.description.clone().unwrap_or_default();
    description.push_str(&format!(
        " (graph input `{}`: {})",
        field.name,
        field.element.onnx_name()
    ));
    schema.insert(
        "description".into(),
        Value::from(description.trim().to_owned()),
    );
    if let Some(min) = field.min {
        schema.insert("minimum".into(), json!(min));
    }
    if let Some(max) = field.max {
        schema.insert("maximum".into(), json!(max));
    }
    if field.element == ElementType::String {
        // ONNX Runtime strings are C strings: NUL is refused with 422.
        schema.insert("pattern".into(), json!("^[^\\u0000]*$"));
    }
    if field.allowed.is_some() {
        schema.insert("enum".into(), json!(field.categories));
    } else if !field.categories.is_empty() {
        schema.insert("examples".into(), json!(field.categories));
    }
    Value::Object(schema)
}
