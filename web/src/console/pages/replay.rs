//! One session: its header, the replay player's data and the live view.

use axum::Router;

use crate::console::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
