//! `/keys`: API keys with per-key quotas (admin only). A key's plaintext is in the answer
//! to `POST /keys` and nowhere else: the stores keep its SHA-256.

use axum::{
    extract::{Path, State},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{auth::Admin, extract::JsonText, state::AppState};
use crate::{
    http::error::{ApiError, ErrorBody, FieldError},
    quota::{ApiKey, KeySpec},
};
use utoipa_axum::{router::OpenApiRouter, routes};

/// The body of `POST /keys` (documentation: the handler validates it field by field).
#[derive(Debug, ToSchema)]
pub struct CreateKey {
    /// Unique; the key's label in metrics.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$", example = "team-a")]
    pub name: String,
    /// Sustained requests per second, shared by every replica.
    #[schema(minimum = 0.001, maximum = 1000000, example = 50)]
    pub rate_per_s: f64,
    /// Requests allowed at once above the rate. Default: the rate rounded up.
    #[schema(minimum = 1, maximum = 100000, example = 10)]
    pub burst: Option<u32>,
}

/// A new key, with its plaintext: store it now, it is never shown again.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    pub id: Uuid,
    pub name: String,
    /// The key to send in the API key header (`x-api-key` by default).
    #[schema(example = "mlk_3f9c...")]
    pub key: String,
    pub rate_per_s: f64,
    pub burst: u32,
    pub created_at_ms: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<ApiKey>,
}

/// Create an API key limited to `rate_per_s` requests per second (with bursts of `burst`)
/// across every replica. The answer carries the key itself, shown once.
#[utoipa::path(post, path = "/keys", tag = "keys",
    request_body(content = CreateKey, content_type = "application/json"),
    responses((status = 201, description = "Created; `key` is shown only here", body = CreatedKey),
              (status = 400, description = "Malformed JSON", body = ErrorBody),
              (status = 413, description = "Body over the size limit", body = ErrorBody),
              (status = 415, description = "Content-Type is not application/json", body = ErrorBody),
              (status = 429, description = "Rate limit exceeded", body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 409, description = "A key of that name exists", body = ErrorBody),
              (status = 422, description = "Invalid field", body = ErrorBody),
              (status = 503, description = "Key store unavailable", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    JsonText(text, body): JsonText,
) -> Result<Response, ApiError> {
    let spec = key_spec(&body, &text).map_err(ApiError::validation)?;
    let (key, plaintext) = state.quotas.create(&spec).await?;
    let location = HeaderValue::from_str(&format!("/keys/{}", key.id));
    let body = CreatedKey {
        id: key.id,
        name: key.name,
        key: plaintext,
        rate_per_s: key.rate_per_s,
        burst: key.burst,
        created_at_ms: key.created_at_ms,
    };
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Every API key, oldest first (names and limits; never the keys themselves).
#[utoipa::path(get, path = "/keys", tag = "keys",
    responses((status = 200, body = KeyList),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 429, description = "Rate limit exceeded", body = ErrorBody),
              (status = 503, description = "Key store unavailable", body = ErrorBody)))]
pub async fn list(State(state): State<AppState>, _admin: Admin) -> Result<Json<KeyList>, ApiError> {
    Ok(Json(KeyList {
        keys: state.quotas.list().await?,
    }))
}

/// Revoke an API key: refused with 401 at once on this replica, and within the key cache's
/// TTL (`--quota-key-cache-ttl`) on the others.
#[utoipa::path(delete, path = "/keys/{id}", tag = "keys",
    params(("id" = Uuid, Path, description = "The key's id")),
    responses((status = 204, description = "Revoked"),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody),
              (status = 429, description = "Rate limit exceeded", body = ErrorBody),
              (status = 503, description = "Key store unavailable", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let not_found = || ApiError::NotFound(format!("API key `{id}` not found"));
    let key_id: Uuid = id.parse().map_err(|_| not_found())?;
    if state.quotas.delete(key_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found())
    }
}

/// Validates `POST /keys`'s body (`text` is the same body as sent), reporting every bad field.
fn key_spec(body: &Value, text: &[u8]) -> Result<KeySpec, Vec<FieldError>> {
    let Value::Object(fields) = body else {
        return Err(vec![FieldError::new(
            "body",
            "type",
            "expected a JSON object",
        )]);
    };
    let mut errors = Vec::new();
    let name = match fields.get("name") {
        None | Some(Value::Null) => {
            errors.push(FieldError::new("name", "missing", "a name is required"));
            None
        }
        Some(Value::String(name)) if valid_name(name) => Some(name.clone()),
        Some(Value::String(_)) => {
            errors.push(FieldError::new(
                "name",
                "format",
                "1 to 64 letters, digits, `-`, `_` or `.`",
            ));
            None
        }
        Some(_) => {
            errors.push(FieldError::new("name", "type", "expected a string"));
            None
        }
    };
    let rate = match fields.get("rate_per_s") {
        None | Some(Value::Null) => {
            errors.push(FieldError::new(
                "rate_per_s",
                "missing",
                "a rate (requests per second) is required",
            ));
            None
        }
        Some(Value::Number(number)) => match number.as_f64() {
            Some(rate)
                if (KeySpec::MIN_RATE..=KeySpec::MAX_RATE).contains(&rate)
                    && within_bounds_as_written(rate, text) =>
            {
                Some(rate)
            }
            _ => {
                errors.push(FieldError::new(
                    "rate_per_s",
                    "range",
                    format!(
                        "from {} to {} requests per second",
                        KeySpec::MIN_RATE,
                        KeySpec::MAX_RATE
                    ),
                ));
                None
            }
        },
        Some(_) => {
            errors.push(FieldError::new("rate_per_s", "type", "expected a number"));
            None
        }
    };
    let burst = match fields.get("burst") {
        None | Some(Value::Null) => {
            rate.map(|rate| (rate.ceil() as u32).clamp(1, KeySpec::MAX_BURST))
        }
        Some(Value::Number(number)) => match number.as_u64() {
            Some(burst) if (1..=u64::from(KeySpec::MAX_BURST)).contains(&burst) => {
                u32::try_from(burst).ok()
            }
            _ => {
                errors.push(FieldError::new(
                    "burst",
                    "range",
                    format!("a whole number from 1 to {}", KeySpec::MAX_BURST),
                ));
                None
            }
        },
        Some(_) => {
            errors.push(FieldError::new("burst", "type", "expected a number"));
            None
        }
    };
    match (name, rate, burst) {
        (Some(name), Some(rate_per_s), Some(burst)) if errors.is_empty() => Ok(KeySpec {
            name,
            rate_per_s,
            burst,
        }),
        _ => Err(errors),
    }
}

/// The bounds of `rate_per_s` as the OpenAPI schema states them (decimal text).
const MIN_RATE_TEXT: &str = "0.001";
const MAX_RATE_TEXT: &str = "1000000";

/// A rate that rounds to a bound as a double may still lie outside it as written
/// (`1000000.0000000001`): at a bound, compare the number's text with the bound exactly, so
/// the check agrees with the schema's `minimum`/`maximum`.
fn within_bounds_as_written(rate: f64, body: &[u8]) -> bool {
    if rate != KeySpec::MIN_RATE && rate != KeySpec::MAX_RATE {
        return true;
    }
    #[derive(serde::Deserialize)]
    struct Rate<'a> {
        #[serde(borrow)]
        rate_per_s: &'a serde_json::value::RawValue,
    }
    let Some(text) = serde_json::from_slice::<Rate<'_>>(body)
        .ok()
        .map(|rate| rate.rate_per_s.get())
    else {
        return false;
    };
    match (
        decimal(text),
        decimal(MIN_RATE_TEXT),
        decimal(MAX_RATE_TEXT),
    ) {
        (Some(value), Some(min), Some(max)) => value >= min && value <= max,
        _ => false,
    }
}

/// A positive JSON number as `(exponent, digits)` with `value = 0.digits × 10^exponent`, the
/// first digit non-zero and no trailing zeros: such pairs order as the numbers do.
fn decimal(text: &str) -> Option<(i64, String)> {
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, exponent.parse::<i64>().ok()?),
        None => (text, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.starts_with('-') {
        return None;
    }
    let digits = format!("{int}{frac}");
    let leading = digits.len() - digits.trim_start_matches('0').len();
    let digits = digits.trim_matches('0').to_owned();
    if digits.is_empty() {
        return None;
    }
    let point = i64::try_from(int.len()).ok()? - i64::try_from(leading).ok()?;
    Some((point.checked_add(exponent)?, digits))
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// API keys (admin).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(delete))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(body: &Value) -> Result<KeySpec, Vec<FieldError>> {
        key_spec(body, body.to_string().as_bytes())
    }

    fn rate(text: &str) -> Result<f64, Vec<FieldError>> {
        let body = format!(r#"{{"name": "k", "rate_per_s": {text}}}"#);
        let value: Value = serde_json::from_str(&body).unwrap();
        key_spec(&value, body.as_bytes()).map(|spec| spec.rate_per_s)
    }

    #[test]
    fn a_rate_is_checked_against_its_bounds_as_written_not_as_rounded() {
        assert_eq!(rate("1000000").unwrap(), 1e6);
        assert_eq!(rate("1e6").unwrap(), 1e6);
        assert_eq!(rate("1000000.000").unwrap(), 1e6);
        assert_eq!(rate("999999.99999999999").unwrap(), 1e6);
        assert!(rate("1000000.0000000001").is_err());
        assert!(rate("1.0000000000000001e6").is_err());
        assert_eq!(rate("0.001").unwrap(), 0.001);
        assert_eq!(rate("1E-3").unwrap(), 0.001);
        assert!(rate("0.00099999999999999999").is_err());
        assert_eq!(rate("0.0010000000000000000001").unwrap(), 0.001);
    }

    #[test]
    fn a_key_spec_needs_a_name_and_a_positive_rate_and_reports_every_bad_field() {
        let spec = parse(&json!({"name": "team-a", "rate_per_s": 2.5})).unwrap();
        assert_eq!((spec.rate_per_s, spec.burst), (2.5, 3));
        let errors =
            parse(&json!({"name": "no spaces", "rate_per_s": 0, "burst": 0.5})).unwrap_err();
        let fields: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e.field.as_str(), e.reason))
            .collect();
        assert_eq!(
            fields,
            [
                ("name", "format"),
                ("rate_per_s", "range"),
                ("burst", "range")
            ]
        );
        let errors = parse(&json!({"rate_per_s": "fast"})).unwrap_err();
        let fields: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e.field.as_str(), e.reason))
            .collect();
        assert_eq!(fields, [("name", "missing"), ("rate_per_s", "type")]);
    }
}
