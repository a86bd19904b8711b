//! Errors of the console layer, each shown as a page with the right status and a message the
//! person can act on. Internal failures are logged in full and shown without detail.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::view::ErrorPage;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("{0}")]
    BadRequest(String),
    /// Signed in, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// Signed in at the identity provider, but no group of theirs maps to a console role.
    #[error("{0}")]
    NoRole(String),
    #[error("{0}")]
    NotFound(String),
    /// The request no longer fits the state (decided already, collected already...).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooManyRequests(String),
    /// A dependency (the identity provider) is down.
    #[error("{0}")]
    Unavailable(String),
    #[error("the console's store failed: {0}")]
    Store(#[from] gateway::store::StoreError),
    #[error("{0}")]
    Internal(String),
}

pub type ConsoleResult<T> = Result<T, ConsoleError>;

impl ConsoleError {
    fn status(&self) -> StatusCode {
        match self {
            ConsoleError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ConsoleError::Forbidden(_) | ConsoleError::NoRole(_) => StatusCode::FORBIDDEN,
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::Conflict(_) => StatusCode::CONFLICT,
            ConsoleError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ConsoleError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ConsoleError::Store(_) | ConsoleError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ConsoleError::BadRequest(_) => "That did not work",
            ConsoleError::Forbidden(_) | ConsoleError::NoRole(_) => "Not allowed",
            ConsoleError::NotFound(_) => "Not found",
            ConsoleError::Conflict(_) => "Already done",
            ConsoleError::TooManyRequests(_) => "Slow down",
            ConsoleError::Unavailable(_) => "Temporarily unavailable",
            ConsoleError::Store(_) | ConsoleError::Internal(_) => "Something went wrong",
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ConsoleError::Store(_) | ConsoleError::Internal(_) => {
                tracing::error!(error = %self, "console request failed");
                "The console could not complete this request. The details are in the \
                 pgbastion log; try again, and tell an admin if it keeps happening."
                    .to_string()
            }
            other => other.to_string(),
        };
        let page = ErrorPage {
            title: self.title(),
            message,
            status: status.as_u16(),
        };
        (status, page.into_response()).into_response()
    }
}
