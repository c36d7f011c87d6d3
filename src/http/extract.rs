//! Extractors whose rejections use the service's error shape instead of axum's plain text.

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, FromRequest, FromRequestParts, Query, Request},
    http::{header, request::Parts, HeaderMap, StatusCode},
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::{ApiError, FieldError};

/// A JSON request body: `Content-Type: application/json` (415 otherwise), within the body
/// limit (413), and syntactically valid (400). Its meaning is checked by the handler (422).
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let JsonText(_, value) = JsonText::from_request(req, state).await?;
        Ok(Self(value))
    }
}

/// A JSON request body as [`JsonBody`] checks it, with its text (for the few checks that need
/// a number exactly as the client wrote it, not as a double).
pub struct JsonText(pub Bytes, pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonText {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let JsonBytes(bytes) = JsonBytes::from_request(req, state).await?;
        let value =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
        Ok(Self(bytes, value))
    }
}

/// A JSON request body's bytes, checked as [`JsonBody`] checks it except for the syntax, for
/// handlers that parse it straight into their own types (`/predict`: into the model's
/// columns). Such a handler answers a syntax error as [`JsonBody`] would, before any other
/// problem with the request ([`malformed_first`]).
pub struct JsonBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limit = body_limit(&req);
        refuse_declared_length(req.headers(), limit)?;
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| body_error(&rejection, limit))?;
        Ok(Self(bytes))
    }
}

/// `error`, unless `body` is not JSON: then the 400 a [`JsonBody`] extractor would have
/// answered first. For the errors a [`JsonBytes`] handler finds before it parses the body.
pub fn malformed_first(body: &[u8], error: ApiError) -> ApiError {
    match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        Ok(_) => error,
        Err(syntax) => ApiError::MalformedJson(syntax.to_string()),
    }
}

/// The configured body limit, put in request extensions so rejections can name it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// The body limit of a request (none when the router did not set one).
pub fn body_limit(req: &Request) -> usize {
    req.extensions()
        .get::<BodyLimit>()
        .map_or(usize::MAX, |limit| limit.0)
}

/// Refuses a body whose declared `Content-Length` is over `limit` before reading any of it:
/// a client that sent `Expect: 100-continue` gets the 413 instead of `100 Continue`, and
/// nothing is read or buffered.
pub fn refuse_declared_length(headers: &HeaderMap, limit: usize) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    match declared {
        Some(length) if length > u64::try_from(limit).unwrap_or(u64::MAX) => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        _ => Ok(()),
    }
}

/// Why a body could not be read: too large (413), too slow (408), or broken (400).
pub fn body_error(rejection: &BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge { limit };
    }
    match super::server::BodyReadTimeout::find(rejection) {
        Some(timeout) => ApiError::BodyTimeout(timeout),
        None => ApiError::MalformedJson(rejection.body_text()),
    }
}

fn is_json(content_type: Option<&header::HeaderValue>) -> bool {
    let Some(Ok(value)) = content_type.map(|v| v.to_str()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Query parameters; a bad one is a 422 naming the parameter.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| Self(value))
            .map_err(|rejection| {
                ApiError::validation(vec![FieldError::new(
                    "query",
                    "type",
                    rejection.body_text(),
                )])
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_are_recognised() {
        let ok = |s: &'static str| is_json(Some(&header::HeaderValue::from_static(s)));
        assert!(ok("application/json"));
        assert!(ok("application/json; charset=utf-8"));
        assert!(ok("Application/JSON"));
        assert!(ok("application/vnd.api+json"));
        assert!(!ok("text/plain"));
        assert!(!ok("application/x-www-form-urlencoded"));
        assert!(!is_json(None));
    }
}
