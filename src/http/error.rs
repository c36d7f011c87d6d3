//! The service's one error type. Every failure a client can see becomes an [`ApiError`],
//! and this file is the only place that picks its HTTP status and JSON body (every
//! `From<DomainError> for ApiError` lives here, so the domain never imports HTTP):
//! `{"error": {"code": "...", "message": "...", "details": [...]}}`.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;
use utoipa::ToSchema;

pub use crate::model::FieldError;
use crate::{
    datasets::DatasetError,
    onnx_import::ImportError,
    quota::QuotaError,
    registry::RegistryError,
    serving::{CatalogError, ScoreError},
};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not valid JSON.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// The request is well-formed but its content breaks the model's schema.
    #[error("{message}")]
    Validation {
        message: String,
        details: Vec<FieldError>,
    },
    #[error("request body is larger than the {limit}-byte limit")]
    PayloadTooLarge { limit: usize },
    #[error("the request body was not received within {0:?}")]
    BodyTimeout(std::time::Duration),
    #[error("expected `Content-Type: application/json`")]
    UnsupportedMediaType,
    /// A body over a limit other than the JSON body limit: the message names the flag.
    #[error("{0}")]
    TooLarge(String),
    /// A content type (or encoding) this endpoint does not take: the message lists those it does.
    #[error("{0}")]
    MediaType(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("this endpoint needs `Authorization: Bearer <admin API key>`")]
    Unauthorized,
    #[error("the admin API key is not valid")]
    Forbidden,
    #[error("the API key is not valid (unknown or revoked)")]
    InvalidApiKey,
    #[error("rate limit exceeded: retry in {retry_after_secs}s")]
    RateLimited { retry_after_secs: u64 },
    #[error("server is at capacity, retry shortly")]
    Overloaded,
    #[error("request did not complete within {0:?}")]
    Timeout(std::time::Duration),
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an inference failure: details are logged (and sent to Sentry), never returned.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn validation(details: Vec<FieldError>) -> Self {
        let message = match details.as_slice() {
            [one] => format!("invalid field `{}`: {}", one.field, one.message),
            many => format!("{} invalid fields", many.len()),
        };
        Self::Validation { message, details }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_) => StatusCode::BAD_REQUEST,
            Self::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::UnsupportedMediaType | Self::MediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::InvalidApiKey => StatusCode::UNAUTHORIZED,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Overloaded | Self::Timeout(_) | Self::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "malformed_json",
            Self::Validation { .. } => "validation",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::BodyTimeout(_) => "body_timeout",
            Self::UnsupportedMediaType | Self::MediaType(_) => "unsupported_media_type",
            Self::TooLarge(_) => "payload_too_large",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::InvalidApiKey => "invalid_api_key",
            Self::RateLimited { .. } => "rate_limited",
            Self::Overloaded => "overloaded",
            Self::Timeout(_) => "timeout",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after_secs } => Some((*retry_after_secs).max(1)),
            Self::Overloaded | Self::Timeout(_) | Self::Unavailable(_) => Some(1),
            _ => None,
        }
    }
}

impl From<CatalogError> for ApiError {
    fn from(error: CatalogError) -> Self {
        match error {
            CatalogError::NotFound(what) => Self::NotFound(format!("model `{what}` not found")),
            CatalogError::NotReady { id, status } => {
                Self::Unavailable(format!("model `{id}` is {status:?}, not ready").to_lowercase())
            }
            CatalogError::Registry(error) => error.into(),
            CatalogError::Load { .. } => Self::Internal(anyhow::Error::new(error)),
        }
    }
}

impl From<DatasetError> for ApiError {
    fn from(error: DatasetError) -> Self {
        match error {
            DatasetError::Invalid {
                field,
                reason,
                message,
            } => Self::validation(vec![FieldError::new(field, reason, message)]),
            DatasetError::Unavailable(_) => Self::Unavailable(error.to_string()),
            DatasetError::Internal(message) => Self::Internal(anyhow::anyhow!(message)),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> Self {
        match error {
            RegistryError::Unavailable(_) => Self::Unavailable(error.to_string()),
            RegistryError::NotFound(what) => Self::NotFound(format!("model `{what}` not found")),
            RegistryError::Conflict(message) => Self::Conflict(message),
            RegistryError::Corrupt(_) => Self::Internal(anyhow::Error::new(error)),
        }
    }
}

impl From<QuotaError> for ApiError {
    fn from(error: QuotaError) -> Self {
        match error {
            QuotaError::Unavailable(_) => Self::Unavailable(error.to_string()),
            QuotaError::Conflict(message) => Self::Conflict(message),
            QuotaError::Corrupt(_) | QuotaError::Internal(_) => {
                Self::Internal(anyhow::Error::new(error))
            }
        }
    }
}

impl From<ImportError> for ApiError {
    fn from(error: ImportError) -> Self {
        Self::validation(vec![error.field_error()])
    }
}

impl From<ScoreError> for ApiError {
    fn from(error: ScoreError) -> Self {
        match error {
            ScoreError::Invalid(details) => Self::validation(details),
            ScoreError::Overloaded => Self::Overloaded,
            ScoreError::Unavailable(message) => Self::Unavailable(message),
            ScoreError::Failed(message) => Self::Internal(anyhow::anyhow!(message)),
            ScoreError::Malformed(message) => Self::MalformedJson(message),
        }
    }
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// Why a request was not served (a 5xx), carried on the response to the middleware that logs
/// it with the request's id, method and route (`middleware::Observe`): an internal error's
/// cause is logged at error level (and reaches Sentry), any other 5xx at warn.
#[derive(Debug, Clone)]
pub struct ServerFailure {
    pub cause: String,
    pub internal: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable error class, e.g. `validation`, `malformed_json`, `rate_limited`.
    pub code: &'static str,
    pub message: String,
    /// Field-level problems (validation errors); empty otherwise.
    pub details: Vec<FieldError>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (message, failure) = match &self {
            // The cause stays in the log (and Sentry), never in the answer.
            Self::Internal(error) => (
                "internal error".to_owned(),
                Some(ServerFailure {
                    cause: format!("{error:#}"),
                    internal: true,
                }),
            ),
            other => {
                let message = other.to_string();
                let failure = status.is_server_error().then(|| ServerFailure {
                    cause: message.clone(),
                    internal: false,
                });
                (message, failure)
            }
        };
        let retry_after = self.retry_after_secs();
        let code = self.code();
        let details = match self {
            Self::Validation { details, .. } => details,
            _ => Vec::new(),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message,
                details,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(failure) = failure {
            response.extensions_mut().insert(failure);
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
