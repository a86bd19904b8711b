//! Admin pages: targets (with a connection test), grants, people. Every handler needs the
//! admin role; every change goes through [`Form`](crate::console::auth::Form) (CSRF and origin
//! checked), is written to the audit log, and answers with a redirect back to its page, whose
//! notice says what was done.

mod connection_test;
mod grants;
mod people;
mod target_form;
mod targets;

use axum::Router;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::console::AppState;
use crate::console::error::ConsoleError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/targets", get(targets::list).post(targets::add))
        .route(
            "/admin/targets/{name}",
            get(targets::show).post(targets::save),
        )
        .route("/admin/targets/{name}/enabled", post(targets::set_enabled))
        .route("/admin/targets/{name}/test", post(targets::test))
        .route("/admin/grants", get(grants::list).post(grants::add))
        .route("/admin/grants/{id}/remove", post(grants::remove))
        .route("/admin/grants/{id}/approval", post(grants::set_approval))
        .route("/admin/people", get(people::list))
        .route("/admin/people/{login}/roles", post(people::set_roles))
        .route("/admin/people/{login}/signout", post(people::sign_out))
}

/// What the redirect after a change carries back to the page. The page builds its notice from
/// fixed sentences and its own data; it never shows this text as it came (anyone can craft a
/// link with a query string).
#[derive(Debug, Default, Deserialize)]
pub struct Done {
    #[serde(default)]
    pub done: Option<String>,
    /// The login or target name the change was about.
    #[serde(default)]
    pub name: Option<String>,
    /// The grant the change was about.
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub count: Option<String>,
}

impl Done {
    pub fn is(&self, what: &str) -> bool {
        self.done.as_deref() == Some(what)
    }

    pub fn count(&self) -> Option<u64> {
        self.count.as_deref().and_then(|c| c.parse().ok())
    }
}

/// A 303 to `path` with `?done=...` and the given extra parameters.
pub fn done_redirect(path: &str, done: &str, extra: &[(&str, &str)]) -> Response {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("done", done)
        .extend_pairs(extra)
        .finish();
    Redirect::to(&format!("{path}?{query}")).into_response()
}

/// `value` as one URL path segment: names made with the CLI may hold any character, and a
/// `/`, `?` or `#` in a link must not change which page it opens.
pub fn path_segment(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One `<option>` of a select.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

/// Options whose value and label are the same word, `current` selected.
pub fn choices(values: &[&str], current: &str) -> Vec<Choice> {
    values
        .iter()
        .map(|v| Choice {
            value: v.to_string(),
            label: v.to_string(),
            selected: *v == current,
        })
        .collect()
}

/// A `true|false` form field (the value of a button or hidden input).
pub fn parse_flag(field: &str, value: &str) -> Result<bool, ConsoleError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(ConsoleError::BadRequest(format!(
            "The field {field} must be true or false, not '{other}'."
        ))),
    }
}

/// A checkbox: browsers send its value only when it is ticked.
pub fn ticked(value: &Option<String>) -> bool {
    value
        .as_deref()
        .is_some_and(|v| !v.is_empty() && v != "false")
}

/// A name PostgreSQL keeps whole (database, role): 1 to 63 bytes, as `NAMEDATALEN` allows; a
/// longer one the server would silently cut, and then it would name something else.
pub fn pg_name(field: &str, value: &str) -> Result<String, ConsoleError> {
    const MAX_NAME_BYTES: usize = 63;
    let value = value.trim();
    if value.is_empty() {
        return Err(ConsoleError::BadRequest(format!("The {field} is empty.")));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(ConsoleError::BadRequest(format!(
            "The {field} is longer than PostgreSQL's {MAX_NAME_BYTES} bytes."
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ConsoleError::BadRequest(format!(
            "The {field} contains a control character."
        )));
    }
    Ok(value.to_string())
}

/// A removed or renamed item between the page and the form's submission.
fn gone(what: &str, name: &str) -> ConsoleError {
    ConsoleError::NotFound(format!("There is no {what} '{name}' (any more)."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_true_or_false_and_name_their_field_otherwise() {
        assert!(parse_flag("enabled", "true").unwrap());
        assert!(!parse_flag("enabled", "false").unwrap());
        let err = parse_flag("enabled", "yes").unwrap_err().to_string();
        assert!(err.contains("enabled") && err.contains("'yes'"), "{err}");
    }

    #[test]
    fn checkboxes_count_as_ticked_only_with_a_value() {
        assert!(ticked(&Some("on".into())));
        assert!(ticked(&Some("true".into())));
        assert!(!ticked(&Some("false".into())));
        assert!(!ticked(&Some(String::new())));
        assert!(!ticked(&None));
    }

    #[test]
    fn postgres_names_are_trimmed_and_bounded_to_63_bytes() {
        assert_eq!(pg_name("role", " app_ro ").unwrap(), "app_ro");
        assert_eq!(pg_name("role", "Ops Team").unwrap(), "Ops Team");
        assert!(pg_name("role", &"r".repeat(63)).is_ok());
        let long = pg_name("database role", &"r".repeat(64)).unwrap_err();
        assert!(long.to_string().contains("database role"), "{long}");
        // 32 two-byte characters are 64 bytes.
        assert!(pg_name("role", &"é".repeat(32)).is_err());
        assert!(
            pg_name("role", "  ")
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        assert!(pg_name("role", "a\nb").is_err());
    }

    #[test]
    fn the_redirect_encodes_its_parameters() {
        let res = done_redirect(
            "/admin/people",
            "roles",
            &[("name", "a b&c"), ("count", "2")],
        );
        assert_eq!(res.status(), axum::http::StatusCode::SEE_OTHER);
        assert_eq!(
            res.headers()["location"],
            "/admin/people?done=roles&name=a+b%26c&count=2"
        );
    }

    #[test]
    fn path_segments_escape_everything_but_unreserved_characters() {
        assert_eq!(path_segment("shop_2.eu-x~"), "shop_2.eu-x~");
        assert_eq!(path_segment("a b/c?d#é"), "a%20b%2Fc%3Fd%23%C3%A9");
    }

    #[test]
    fn choices_select_the_current_value() {
        let got = choices(&["disable", "require"], "require");
        assert_eq!(
            got.iter().map(|c| c.selected).collect::<Vec<_>>(),
            [false, true]
        );
    }
}
