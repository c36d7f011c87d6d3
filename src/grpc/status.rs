//! Errors as gRPC statuses: the one place a gRPC code is chosen. Every failure first becomes
//! the [`ApiError`] V2 over REST would answer (so both protocols refuse the same requests for
//! the same reasons, with the same messages), then the code of its HTTP status.

use tonic::{Code, Status};

use crate::http::{error::ApiError, v2};

pub fn status(error: ApiError) -> Status {
    let code = match error.status().as_u16() {
        400 | 413 | 415 | 422 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        408 => Code::DeadlineExceeded,
        409 => Code::Aborted,
        429 => Code::ResourceExhausted,
        503 => Code::Unavailable,
        _ => Code::Internal,
    };
    let message = match &error {
        ApiError::Internal(inner) => {
            tracing::error!(error = format!("{inner:#}"), "gRPC call failed");
            "internal error".to_owned()
        }
        other => {
            if code == Code::Unavailable {
                tracing::warn!(error = %other, "gRPC call not served");
            }
            v2::message(other)
        }
    };
    Status::new(code, message)
}

/// A request the protocol refuses before any model sees it.
pub fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message)
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse;

    use super::*;
    use crate::{inference::InferenceError, serving::scorer::ScoreError};

    /// What V2 over REST answers when the model's inference queue is full (503), gRPC answers
    /// as UNAVAILABLE with the same message.
    #[tokio::test]
    async fn a_full_inference_queue_is_unavailable_with_the_rest_message() {
        let full = || ApiError::from(ScoreError::from_inference(InferenceError::QueueFull, "m"));
        let rest = full().into_response();
        assert_eq!(rest.status(), 503);
        let body = axum::body::to_bytes(rest.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let grpc = status(full());
        assert_eq!(grpc.code(), Code::Unavailable);
        assert_eq!(grpc.message(), body["error"]["message"]);
        assert_eq!(grpc.message(), "server is at capacity, retry shortly");
    }
}
