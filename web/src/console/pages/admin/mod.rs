//! Admin pages: targets, grants, people.

use axum::Router;

use crate::console::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
