//! The console's pages, one module per part.

pub mod access;
pub mod admin;
pub mod approvals;
pub mod audit;
pub mod credentials;
pub mod export;
pub mod home;
pub mod integrity;
pub mod replay;
pub mod sessions;

use axum::response::Response;

use super::error::ConsoleError;
use axum::response::IntoResponse;

pub async fn not_found() -> Response {
    ConsoleError::NotFound("There is no such page.".into()).into_response()
}

/// Parses a path id; a malformed one is simply not found.
pub fn parse_id(id: &str) -> Result<uuid::Uuid, ConsoleError> {
    id.parse()
        .map_err(|_| ConsoleError::NotFound("There is no such item.".into()))
}
