//! Exports of recordings and search results.

use axum::Router;

use crate::console::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
