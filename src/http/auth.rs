//! Admin authentication for the write endpoints: `Authorization: Bearer <admin key>`.
//! With no admin key configured (single-node development), writes are open, as the Celery training API's were.

use axum::{extract::FromRequestParts, http::request::Parts};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::state::AppState;

/// Present in a handler's arguments: the request carries the admin key (or none is set).
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(expected) = state.admin_key.as_deref() else {
            return Ok(Self);
        };
        let given = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized)?;
        if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(Self)
        } else {
            Err(ApiError::Forbidden)
        }
    }
}
