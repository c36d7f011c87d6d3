//! Request bodies of the alias routes, checked field by field (422 with every problem).

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::{header, StatusCode},
};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    http::error::{ApiError, FieldError},
    http::extract::{BodyLimit, JsonBody},
};

/// `PUT /models/{name}/aliases/{alias}`: every field is optional, at least one is required.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AliasTarget {
    /// The model the alias points at (its champion): a ready model of that name.
    pub model_id: Option<Uuid>,
    /// A ready model of that name scored in the shadow of the champion; `null` removes it.
    pub challenger: Option<Uuid>,
    /// Fraction of the alias's requests also scored by the challenger, 0..=1 (required when
    /// the alias has no challenger yet).
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub shadow_fraction: Option<f64>,
}
/// Conditions a promotion must meet (all optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct PromoteGate {
    /// Records compared at least.
    pub min_samples: Option<u64>,
    /// Disagreement rate (1 − agreement rate) at most, 0..=1.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub max_disagreement: Option<f64>,
}
#[derive(Debug, Default)]
pub(super) enum ChallengerChange {
    #[default]
    Unchanged,
    Remove,
    Set(Uuid),
}

#[derive(Debug, Default)]
pub(super) struct AliasChange {
    pub model_id: Option<Uuid>,
    pub challenger: ChallengerChange,
    pub shadow_fraction: Option<f64>,
}

fn uuid_field(name: &str, value: &Value, errors: &mut Vec<FieldError>) -> Option<Uuid> {
    let id = value.as_str().and_then(|text| text.parse().ok());
    if id.is_none() {
        errors.push(FieldError::new(name, "type", "expected a model id (UUID)"));
    }
    id
}

fn fraction_field(name: &str, value: &Value, errors: &mut Vec<FieldError>) -> Option<f64> {
    match value.as_f64() {
        Some(f) if (0.0..=1.0).contains(&f) => Some(f),
        Some(f) => {
            errors.push(FieldError::new(
                name,
                "range",
                format!("{f} is out of range: must be between 0 and 1"),
            ));
            None
        }
        None => {
            errors.push(FieldError::new(name, "type", "expected a number"));
            None
        }
    }
}

impl AliasChange {
    pub(super) fn parse(body: Value) -> Result<Self, ApiError> {
        let Value::Object(fields) = body else {
            return Err(ApiError::validation(vec![FieldError::new(
                "body",
                "type",
                "expected a JSON object",
            )]));
        };
        let mut change = Self::default();
        let mut errors = Vec::new();
        for (key, value) in &fields {
            match key.as_str() {
                "model_id" => change.model_id = uuid_field(key, value, &mut errors),
                "challenger" if value.is_null() => change.challenger = ChallengerChange::Remove,
                "challenger" => {
                    if let Some(id) = uuid_field(key, value, &mut errors) {
                        change.challenger = ChallengerChange::Set(id);
                    }
                }
                "shadow_fraction" => {
                    change.shadow_fraction = fraction_field(key, value, &mut errors);
                }
                other => errors.push(FieldError::new(
                    other,
                    "unknown",
                    "expected `model_id`, `challenger` and `shadow_fraction`",
                )),
            }
        }
        if fields.is_empty() {
            errors.push(FieldError::new(
                "body",
                "missing",
                "give `model_id`, `challenger` or `shadow_fraction`",
            ));
        }
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        Ok(change)
    }
}

pub(super) fn valid_alias(alias: &str) -> Result<(), ApiError> {
    let valid = !alias.is_empty()
        && alias.len() <= 64
        && alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(ApiError::validation(vec![FieldError::new(
            "alias",
            "format",
            "1 to 64 letters, digits, `-` or `_`",
        )]))
    }
}
/// The promotion gate: a JSON body (415/413/400 as for every JSON body), or no body at all.
pub struct GateBody(pub PromoteGate);

impl<S: Send + Sync> FromRequest<S> for GateBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let value = if req.headers().contains_key(header::CONTENT_TYPE) {
            JsonBody::from_request(req, state).await?.0
        } else {
            let limit = req
                .extensions()
                .get::<BodyLimit>()
                .map_or(usize::MAX, |limit| limit.0);
            let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge { limit }
                } else {
                    ApiError::MalformedJson(rejection.body_text())
                }
            })?;
            if !bytes.iter().all(u8::is_ascii_whitespace) {
                return Err(ApiError::UnsupportedMediaType);
            }
            return Ok(Self(PromoteGate::default()));
        };
        parse_gate(value).map(Self)
    }
}

fn parse_gate(value: Value) -> Result<PromoteGate, ApiError> {
    let Value::Object(fields) = value else {
        return Err(ApiError::validation(vec![FieldError::new(
            "body",
            "type",
            "expected a JSON object",
        )]));
    };
    let mut gate = PromoteGate::default();
    let mut errors = Vec::new();
    for (key, value) in &fields {
        match key.as_str() {
            "min_samples" => match value.as_u64() {
                Some(n) => gate.min_samples = Some(n),
                None => errors.push(FieldError::new(
                    key,
                    "type",
                    "expected a non-negative integer",
                )),
            },
            "max_disagreement" => {
                gate.max_disagreement = fraction_field(key, value, &mut errors);
            }
            other => errors.push(FieldError::new(
                other,
                "unknown",
                "expected `min_samples` and `max_disagreement`",
            )),
        }
    }
    if errors.is_empty() {
        Ok(gate)
    } else {
        Err(ApiError::validation(errors))
    }
}
