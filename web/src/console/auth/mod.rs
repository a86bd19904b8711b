//! Who is asking, and what they may do.
//!
//! A signed-in browser holds a random token in the `pgbastion_session` cookie (HttpOnly,
//! Secure, SameSite=Lax); the store keeps its SHA-256 with the person, their roles and the CSRF
//! token ([`session`]). [`Viewer`] is the extractor every page uses: it refuses ended, expired
//! and idle sessions. [`Form`] is the extractor every state-changing request uses: it also
//! checks the CSRF token and the request's origin.

pub mod oidc;
pub mod password;
pub mod roles;
pub mod session;
pub mod signin;
pub mod throttle;

use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Method, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::de::DeserializeOwned;

pub use roles::{Role, Roles};

use super::AppState;
use super::error::ConsoleError;

/// The signed-in person making this request.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub login: String,
    pub roles: Roles,
    /// The token forms must send back.
    pub csrf: String,
    /// The session's key in the store (SHA-256 of the cookie's token).
    pub token_hash: Vec<u8>,
    /// The client's address as the console saw it, for the audit log.
    pub client_addr: Option<String>,
}

impl Viewer {
    /// Fails with 403 unless the viewer has `role`.
    pub fn require(&self, role: Role) -> Result<(), ConsoleError> {
        if self.roles.has(role) {
            Ok(())
        } else {
            Err(ConsoleError::Forbidden(format!(
                "This page needs the {} role, which {} does not have.",
                role.as_str(),
                self.login
            )))
        }
    }
}

/// Why there is no viewer: not signed in (a page sends the browser to sign in) or the store
/// failed.
pub enum NoViewer {
    SignIn { next: String },
    Error(ConsoleError),
}

impl IntoResponse for NoViewer {
    fn into_response(self) -> Response {
        match self {
            NoViewer::SignIn { next } => {
                let target = if next == "/" || !next.starts_with('/') || next.starts_with("//") {
                    "/login".to_string()
                } else {
                    format!(
                        "/login?next={}",
                        url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
                    )
                };
                let mut res = Redirect::to(&target).into_response();
                // A stale cookie is cleared, so the browser stops sending it.
                session::set_cookie(&mut res, &session::clear_cookie());
                res
            }
            NoViewer::Error(e) => e.into_response(),
        }
    }
}

impl<S> FromRequestParts<S> for Viewer
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = NoViewer;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let next = if parts.method == Method::GET {
            parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into())
        } else {
            "/".into()
        };
        let Some(token) = session::cookie_token(&parts.headers) else {
            return Err(NoViewer::SignIn { next });
        };
        match session::resolve(&state, &token).await {
            Ok(Some(s)) => Ok(Viewer {
                login: s.person_login,
                roles: Roles::from_names(&s.roles),
                csrf: s.csrf_token,
                token_hash: s.token_hash,
                client_addr: client_addr(parts, &state.trusted_proxies),
            }),
            Ok(None) => Err(NoViewer::SignIn { next }),
            Err(e) => Err(NoViewer::Error(e.into())),
        }
    }
}

/// The client's address: the TCP peer, unless the peer is one of `console.trusted_proxies`;
/// then the address that proxy (and any trusted proxy before it) got the request from, read
/// from `X-Forwarded-For` right to left. Without this, behind a proxy every person would share
/// the proxy's address, in the audit log and in the sign-in throttle.
pub fn client_addr(parts: &Parts, trusted_proxies: &[std::net::IpAddr]) -> Option<String> {
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())?;
    let forwarded = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    Some(forwarded_client(peer, &forwarded, trusted_proxies).to_string())
}

/// The first address, from the right of the forwarding chain `peer ← forwarded`, that is not a
/// trusted proxy. A malformed entry stops the walk there: what is left of it cannot be trusted.
fn forwarded_client(
    peer: std::net::IpAddr,
    forwarded: &str,
    trusted: &[std::net::IpAddr],
) -> std::net::IpAddr {
    let mut client = peer;
    let mut hops = forwarded
        .rsplit(',')
        .map(str::trim)
        .filter(|h| !h.is_empty());
    while trusted.contains(&client) {
        match hops.next().map(str::parse::<std::net::IpAddr>) {
            Some(Ok(ip)) => client = ip,
            _ => break,
        }
    }
    client
}

/// The client's address, for handlers without a viewer (sign-in).
pub struct ClientAddr(pub Option<String>);

impl<S> FromRequestParts<S> for ClientAddr
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        Ok(ClientAddr(client_addr(parts, &state.trusted_proxies)))
    }
}

/// The form of a state-changing request that carries nothing but its CSRF token (sign-out,
/// revoke, collect...).
#[derive(Debug, serde::Deserialize)]
pub struct NoFields {}

/// A state-changing request from a signed-in viewer, with its form decoded: the CSRF token in
/// the form must match the session's, and the browser must not say the request came from
/// another site.
pub struct Form<T> {
    pub viewer: Viewer,
    pub form: T,
}

#[derive(serde::Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

impl<S, T> FromRequest<S> for Form<T>
where
    AppState: FromRef<S>,
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let app = AppState::from_ref(state);
        check_origin(&parts, &app).map_err(IntoResponse::into_response)?;
        let bytes = axum::body::to_bytes(body, super::MAX_FORM_BYTES)
            .await
            .map_err(|_| {
                ConsoleError::BadRequest("The form is too large.".into()).into_response()
            })?;
        let field: CsrfField = serde_urlencoded::from_bytes(&bytes).map_err(|_| {
            ConsoleError::BadRequest("The form could not be read.".into()).into_response()
        })?;
        if !constant_time_eq(field.csrf.as_bytes(), viewer.csrf.as_bytes()) {
            return Err(ConsoleError::Forbidden(
                "The form's security token is missing or stale. Reload the page and try \
                 again."
                    .into(),
            )
            .into_response());
        }
        let form = serde_urlencoded::from_bytes(&bytes).map_err(|e| {
            ConsoleError::BadRequest(format!("The form is incomplete or malformed: {e}."))
                .into_response()
        })?;
        Ok(Form { viewer, form })
    }
}

/// Refuses a state-changing request that a browser marks as coming from another site (Origin
/// or Sec-Fetch-Site). Requests without either (curl, old browsers) rely on the CSRF token.
pub fn check_origin(parts: &Parts, state: &AppState) -> Result<(), ConsoleError> {
    if same_site(&parts.headers, &state.public_url) {
        Ok(())
    } else {
        Err(ConsoleError::Forbidden(
            "This request came from another site, so it was refused. Use the console's own \
             pages."
                .into(),
        ))
    }
}

/// Whether the browser's headers allow a state-changing request: not marked cross-site, and an
/// `Origin` (when sent) that is the console's public origin or the requested host.
fn same_site(headers: &axum::http::HeaderMap, public_url: &str) -> bool {
    let fetch_site = headers.get("sec-fetch-site").map(|v| v.as_bytes());
    if fetch_site == Some(b"cross-site".as_slice()) {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let origin = origin.to_str().unwrap_or_default();
    // Browsers send "null" from sandboxed contexts, and from our own pages under a strict
    // referrer policy; only the browser's own word that the request is same-origin tells the
    // two apart.
    if origin == "null" {
        return fetch_site == Some(b"same-origin".as_slice());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    origin == origin_of(public_url)
        || origin
            .split_once("://")
            .is_some_and(|(_, rest)| !host.is_empty() && rest == host)
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split('/').next().unwrap_or_default();
            format!("{scheme}://{host}")
        }
        None => url.to_string(),
    }
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderMap;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_client_behind_trusted_proxies_is_the_first_untrusted_hop() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let lb = ip("10.0.0.2");
        let trusted = [lb, ip("10.0.0.3")];
        // Not behind a trusted proxy: the header is the client's to forge, and ignored.
        assert_eq!(
            forwarded_client(ip("192.0.2.9"), "1.2.3.4", &trusted),
            ip("192.0.2.9")
        );
        assert_eq!(
            forwarded_client(lb, "198.51.100.7", &trusted),
            ip("198.51.100.7")
        );
        // Two trusted hops; the client's own forged entry on the left is not reached.
        assert_eq!(
            forwarded_client(lb, "6.6.6.6, 198.51.100.7, 10.0.0.3", &trusted),
            ip("198.51.100.7")
        );
        // A trusted proxy that forwards garbage or nothing: its own address.
        assert_eq!(forwarded_client(lb, "not-an-ip", &trusted), lb);
        assert_eq!(forwarded_client(lb, "", &trusted), lb);
        // No proxies configured: always the peer.
        assert_eq!(forwarded_client(lb, "198.51.100.7", &[]), lb);
    }

    #[test]
    fn only_requests_from_the_console_itself_may_change_things() {
        let url = "http://127.0.0.1:8080";
        assert!(
            same_site(&headers(&[]), url),
            "no browser headers: the CSRF token decides"
        );
        assert!(same_site(&headers(&[("origin", url)]), url));
        assert!(same_site(
            &headers(&[("origin", "http://bastion:9000"), ("host", "bastion:9000")]),
            url
        ));
        assert!(!same_site(
            &headers(&[("origin", "http://evil.example")]),
            url
        ));
        assert!(!same_site(
            &headers(&[("sec-fetch-site", "cross-site")]),
            url
        ));
        assert!(!same_site(
            &headers(&[("origin", url), ("sec-fetch-site", "cross-site")]),
            url
        ));
        // Origin: null is ours only when the browser says the request is same-origin.
        assert!(same_site(
            &headers(&[("origin", "null"), ("sec-fetch-site", "same-origin")]),
            url
        ));
        assert!(!same_site(&headers(&[("origin", "null")]), url));
        assert!(!same_site(
            &headers(&[("origin", "null"), ("sec-fetch-site", "same-site")]),
            url
        ));
    }
}
