//! A small browser for console tests: it keeps the console's cookies itself (so a test can
//! look at, drop or replay any of them), never follows redirects (so every 303 is seen), and
//! reads just enough HTML to find form tokens. Sign-in helpers drive both ways in, through the
//! real identity provider or a local account, and fail unless they end signed in.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode};

use crate::console::ConsoleLab;
use crate::oidc::OidcProvider;

/// The console's session cookie.
pub const SESSION_COOKIE: &str = "pgbastion_session";
/// The cookie holding a pending OpenID Connect sign-in (state, nonce, PKCE verifier).
pub const PENDING_COOKIE: &str = "pgbastion_oidc";
/// The double-submit cookie of the local sign-in form.
pub const LOGIN_COOKIE: &str = "pgbastion_login";

/// A cookie as the console set it: only what deciding where to send it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie {
    pub name: String,
    pub value: String,
    pub path: String,
}

/// One response, read whole.
#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    /// A header's value as text (the first, if repeated).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Where a redirect points.
    pub fn location(&self) -> Option<&str> {
        self.header(header::LOCATION.as_str())
    }

    /// Every `Set-Cookie` header, verbatim.
    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// The `Set-Cookie` header for cookie `name`, verbatim.
    pub fn set_cookie(&self, name: &str) -> Option<&str> {
        self.set_cookies()
            .into_iter()
            .find(|c| parse_set_cookie(c).is_some_and(|(cookie, _)| cookie.name == name))
    }

    /// Whether this response gives the browser a session (a non-empty session cookie).
    pub fn sets_session(&self) -> bool {
        self.set_cookie(SESSION_COOKIE)
            .and_then(parse_set_cookie)
            .is_some_and(|(cookie, removed)| !removed && !cookie.value.is_empty())
    }

    /// Fails with the status and the page unless the status is `expected`.
    pub fn expect(&self, expected: StatusCode, what: &str) -> anyhow::Result<&Page> {
        ensure!(
            self.status == expected,
            "{what}: expected {expected}, got {} (Location: {:?})\n{}",
            self.status,
            self.location(),
            self.body
        );
        Ok(self)
    }

    /// Fails unless this is a 303 to `to` (a path).
    pub fn expect_redirect(&self, to: &str, what: &str) -> anyhow::Result<&Page> {
        self.expect(StatusCode::SEE_OTHER, what)?;
        ensure!(
            self.location() == Some(to),
            "{what}: redirected to {:?}, not {to}",
            self.location()
        );
        Ok(self)
    }

    /// Fails unless this is a 303 to `path`, whatever the query (e.g. `/approvals?done=...`).
    pub fn expect_redirect_path(&self, path: &str, what: &str) -> anyhow::Result<&Page> {
        self.expect(StatusCode::SEE_OTHER, what)?;
        let location = self.location().unwrap_or_default();
        ensure!(
            location.split('?').next() == Some(path),
            "{what}: redirected to {location:?}, not {path}"
        );
        Ok(self)
    }

    /// The value of the hidden input `name` (the first on the page), entities decoded.
    pub fn hidden_input(&self, name: &str) -> Option<String> {
        let mut rest = self.body.as_str();
        while let Some(i) = rest.find("<input") {
            rest = &rest[i..];
            let end = rest.find('>').unwrap_or(rest.len());
            let tag = &rest[..end];
            if attribute(tag, "type").as_deref() == Some("hidden")
                && attribute(tag, "name").as_deref() == Some(name)
            {
                return Some(attribute(tag, "value").unwrap_or_default());
            }
            rest = &rest[end..];
        }
        None
    }

    /// The token the console's forms send back (`csrf`), from any form on the page.
    pub fn csrf(&self) -> anyhow::Result<String> {
        self.hidden_input("csrf")
            .filter(|t| !t.is_empty())
            .with_context(|| format!("no csrf field on the page:\n{}", self.body))
    }

    /// The local sign-in form's token (`login_csrf`).
    pub fn login_csrf(&self) -> anyhow::Result<String> {
        self.hidden_input("login_csrf")
            .filter(|t| !t.is_empty())
            .with_context(|| format!("no login_csrf field on the page:\n{}", self.body))
    }

    /// The text inside the element with `id="ID"` (up to the next tag), entities decoded.
    pub fn element_text(&self, id: &str) -> Option<String> {
        let marker = format!(" id=\"{id}\"");
        let at = self.body.find(&marker)?;
        let open_end = at + self.body[at..].find('>')? + 1;
        let close = open_end + self.body[open_end..].find('<')?;
        Some(decode_entities(&self.body[open_end..close]))
    }

    /// Every `action` of a POST form on the page, e.g. to find a request's collect URL.
    pub fn form_actions(&self) -> Vec<String> {
        let mut actions = Vec::new();
        let mut rest = self.body.as_str();
        while let Some(i) = rest.find("<form") {
            rest = &rest[i..];
            let end = rest.find('>').unwrap_or(rest.len());
            if let Some(action) = attribute(&rest[..end], "action") {
                actions.push(action);
            }
            rest = &rest[end..];
        }
        actions
    }
}

/// A browser on the console. Methods take `&self`: the cookie jar is behind a lock.
pub struct WebClient {
    base: String,
    /// Talks to the console: no cookie store (the jar below is ours), no redirects.
    http: reqwest::Client,
    /// Talks to the identity provider, which keeps its own sign-in cookies.
    provider: reqwest::Client,
    jar: Mutex<Vec<Cookie>>,
}

impl WebClient {
    /// A browser with no cookies for the console at `base` (`http://127.0.0.1:PORT`).
    pub fn new(base: &str) -> anyhow::Result<WebClient> {
        crate::clients::install_crypto_provider();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .context("cannot build an HTTP client")?;
        Ok(WebClient {
            base: base.trim_end_matches('/').to_owned(),
            http,
            provider: OidcProvider::browser_like_client()?,
            jar: Mutex::new(Vec::new()),
        })
    }

    /// A browser with no cookies for the lab's console.
    pub fn for_lab(lab: &ConsoleLab) -> anyhow::Result<WebClient> {
        WebClient::new(&lab.url())
    }

    /// A browser signed in as `login` through the lab's identity provider.
    pub async fn oidc(lab: &ConsoleLab, login: &str) -> anyhow::Result<WebClient> {
        let client = WebClient::for_lab(lab)?;
        client.sign_in_oidc(lab, login).await?;
        Ok(client)
    }

    /// A browser signed in with a local account.
    pub async fn local(lab: &ConsoleLab, login: &str, password: &str) -> anyhow::Result<WebClient> {
        let client = WebClient::for_lab(lab)?;
        client.sign_in_local(login, password).await?;
        Ok(client)
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The client this browser uses at the identity provider (it keeps the provider's cookies).
    pub fn provider_client(&self) -> &reqwest::Client {
        &self.provider
    }

    /// `path` under the console, or `path` itself when it is already a full URL.
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        }
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Page> {
        self.send(Method::GET, path, &[], None).await
    }

    /// A form POST (`application/x-www-form-urlencoded`).
    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> anyhow::Result<Page> {
        self.post_form_with(path, fields, &[]).await
    }

    /// A form POST with extra request headers (e.g. `Origin`).
    pub async fn post_form_with(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Page> {
        let body = form_urlencoded(fields);
        let body = (
            "application/x-www-form-urlencoded".to_owned(),
            body.into_bytes(),
        );
        self.send(Method::POST, path, headers, Some(body)).await
    }

    /// A POST of any bytes with any content type (hostile forms).
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<Page> {
        self.send(
            Method::POST,
            path,
            &[],
            Some((content_type.to_owned(), body)),
        )
        .await
    }

    /// One request with this browser's cookies; cookies it sets are kept.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(String, Vec<u8>)>,
    ) -> anyhow::Result<Page> {
        let url = self.url(path);
        let parsed = reqwest::Url::parse(&url).with_context(|| format!("bad URL {url}"))?;
        let mut request = self.http.request(method.clone(), parsed.clone());
        if let Some(cookies) = self.cookie_header(parsed.path()) {
            request = request.header(header::COOKIE, cookies);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some((content_type, bytes)) = body {
            request = request
                .header(header::CONTENT_TYPE, content_type)
                .body(bytes);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {url} failed"))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .text()
            .await
            .with_context(|| format!("reading the answer to {method} {url}"))?;
        let page = Page {
            status,
            headers,
            body,
        };
        self.keep_cookies(&page);
        Ok(page)
    }

    /// A GET whose answer is read by the caller as it comes (server-sent events).
    pub async fn get_streaming(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let url = self.url(path);
        let parsed = reqwest::Url::parse(&url).with_context(|| format!("bad URL {url}"))?;
        // No overall timeout: the stream lasts as long as the caller reads it.
        let streaming = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("cannot build an HTTP client")?;
        let mut request = streaming.get(parsed.clone());
        if let Some(cookies) = self.cookie_header(parsed.path()) {
            request = request.header(header::COOKIE, cookies);
        }
        request
            .send()
            .await
            .with_context(|| format!("GET {url} failed"))
    }

    // --- cookies ---

    /// The value of cookie `name`, if the browser holds it.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.jar()
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.value.clone())
    }

    /// Every cookie the browser holds, e.g. to restore them later with [`WebClient::set_cookies`].
    pub fn cookies(&self) -> Vec<Cookie> {
        self.jar().clone()
    }

    /// Replaces the browser's cookies.
    pub fn set_cookies(&self, cookies: Vec<Cookie>) {
        *self.jar() = cookies;
    }

    /// Adds or replaces one cookie, as an attacker (or a restored backup) would.
    pub fn put_cookie(&self, name: &str, value: &str, path: &str) {
        let mut jar = self.jar();
        jar.retain(|c| !(c.name == name && c.path == path));
        jar.push(Cookie {
            name: name.to_owned(),
            value: value.to_owned(),
            path: path.to_owned(),
        });
    }

    /// Drops cookie `name` (whatever its path).
    pub fn remove_cookie(&self, name: &str) {
        self.jar().retain(|c| c.name != name);
    }

    fn jar(&self) -> std::sync::MutexGuard<'_, Vec<Cookie>> {
        self.jar.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn cookie_header(&self, path: &str) -> Option<String> {
        let jar = self.jar();
        let pairs: Vec<String> = jar
            .iter()
            .filter(|c| path_matches(path, &c.path))
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }

    fn keep_cookies(&self, page: &Page) {
        let mut jar = self.jar();
        for raw in page.set_cookies() {
            let Some((cookie, removed)) = parse_set_cookie(raw) else {
                continue;
            };
            jar.retain(|c| !(c.name == cookie.name && c.path == cookie.path));
            if !removed {
                jar.push(cookie);
            }
        }
    }

    // --- signing in ---

    /// The nav's form token, read from the start page (signed in only).
    pub async fn csrf(&self) -> anyhow::Result<String> {
        let home = self.get("/").await?;
        home.expect(StatusCode::OK, "GET / for the csrf token")?;
        home.csrf()
    }

    /// Starts an OpenID Connect sign-in at the console: the provider URL it redirects to
    /// (the pending-sign-in cookie is now in the jar).
    pub async fn oidc_start(&self) -> anyhow::Result<String> {
        let start = self.get("/auth/oidc/start").await?;
        start.expect(StatusCode::SEE_OTHER, "GET /auth/oidc/start")?;
        ensure!(
            self.cookie(PENDING_COOKIE).is_some(),
            "/auth/oidc/start set no {PENDING_COOKIE} cookie: {:?}",
            start.set_cookies()
        );
        start
            .location()
            .map(str::to_owned)
            .context("/auth/oidc/start redirected nowhere")
    }

    /// Starts a sign-in and signs `login` in at the provider: the callback URL the provider
    /// sends the browser back to, not requested yet.
    pub async fn oidc_callback_url(&self, lab: &ConsoleLab, login: &str) -> anyhow::Result<String> {
        let authorize = self.oidc_start().await?;
        lab.idp.sign_in(&self.provider, &authorize, login).await
    }

    /// Signs `login` in through the provider; fails unless the callback answers 303 to `/`
    /// with a session cookie.
    pub async fn sign_in_oidc(&self, lab: &ConsoleLab, login: &str) -> anyhow::Result<()> {
        let callback = self.oidc_callback_url(lab, login).await?;
        let page = self.get(&callback).await?;
        page.expect_redirect("/", &format!("OIDC callback for {login}"))?;
        ensure!(
            page.sets_session() && self.cookie(SESSION_COOKIE).is_some(),
            "the callback for {login} set no session cookie: {:?}",
            page.set_cookies()
        );
        Ok(())
    }

    /// Posts the local sign-in form (after loading it for its token) and returns the answer.
    pub async fn try_sign_in_local(&self, login: &str, password: &str) -> anyhow::Result<Page> {
        let form = self.get("/login").await?;
        form.expect(StatusCode::OK, "GET /login")?;
        let token = form.login_csrf()?;
        self.post_form(
            "/login/local",
            &[
                ("login_csrf", &token),
                ("next", "/"),
                ("login", login),
                ("password", password),
            ],
        )
        .await
    }

    /// Signs in with a local account; fails unless it answers 303 to `/` with a session cookie.
    pub async fn sign_in_local(&self, login: &str, password: &str) -> anyhow::Result<()> {
        let page = self.try_sign_in_local(login, password).await?;
        page.expect_redirect("/", &format!("local sign-in of {login}"))?;
        if !page.sets_session() {
            bail!(
                "the local sign-in of {login} set no session cookie: {:?}",
                page.set_cookies()
            );
        }
        Ok(())
    }

    /// Whether the browser is signed in: `/` shows a page rather than sending it to `/login`.
    pub async fn is_signed_in(&self) -> anyhow::Result<bool> {
        let home = self.get("/").await?;
        match home.status {
            StatusCode::OK => Ok(true),
            StatusCode::SEE_OTHER if home.location() == Some("/login") => Ok(false),
            other => bail!("GET / answered {other}:\n{}", home.body),
        }
    }
}

/// A `Set-Cookie` value as a cookie, and whether it removes the cookie (`Max-Age=0` or an
/// empty value).
pub fn parse_set_cookie(raw: &str) -> Option<(Cookie, bool)> {
    let mut parts = raw.split(';').map(str::trim);
    let (name, value) = parts.next()?.split_once('=')?;
    let mut path = "/".to_owned();
    let mut removed = value.is_empty();
    for attribute in parts {
        let (key, val) = attribute.split_once('=').unwrap_or((attribute, ""));
        if key.eq_ignore_ascii_case("path") && val.starts_with('/') {
            path = val.to_owned();
        } else if key.eq_ignore_ascii_case("max-age") && val.parse::<i64>().is_ok_and(|s| s <= 0) {
            removed = true;
        }
    }
    Some((
        Cookie {
            name: name.to_owned(),
            value: value.to_owned(),
            path,
        },
        removed,
    ))
}

/// The attributes of a `Set-Cookie` value, lower-cased names, e.g. `[("httponly", ""),
/// ("path", "/")]`.
pub fn cookie_attributes(raw: &str) -> Vec<(String, String)> {
    raw.split(';')
        .skip(1)
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| {
            let (key, val) = a.split_once('=').unwrap_or((a, ""));
            (key.to_ascii_lowercase(), val.to_owned())
        })
        .collect()
}

/// RFC 6265 path-match: `/login` matches `/login` and `/login/local`, not `/loginx`.
fn path_matches(request: &str, cookie: &str) -> bool {
    request == cookie
        || (request.starts_with(cookie)
            && (cookie.ends_with('/') || request[cookie.len()..].starts_with('/')))
}

/// `application/x-www-form-urlencoded` of the fields, in order.
fn form_urlencoded(fields: &[(&str, &str)]) -> String {
    reqwest::Url::parse_with_params("http://form.invalid/", fields)
        .ok()
        .and_then(|u| u.query().map(str::to_owned))
        .unwrap_or_default()
}

/// The value of `name="..."` in a tag, entities decoded.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let needle = format!(" {name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let len = tag[start..].find('"')?;
    Some(decode_entities(&tag[start..start + len]))
}

/// The entities HTML escapers write (askama: `&#60;` `&#62;` `&#34;` `&#39;` `&#38;`), decoded;
/// `&amp;` last, so that an escaped entity stays one.
pub fn decode_entities(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&#60;", "<")
        .replace("&gt;", ">")
        .replace("&#62;", ">")
        .replace("&#38;", "&")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(body: &str) -> Page {
        Page {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: body.to_owned(),
        }
    }

    #[test]
    fn hidden_inputs_are_found_by_name_and_decoded() {
        let p = page(
            r#"<form method="post" action="/requests/1/collect"><input type="hidden" name="csrf" value="a&amp;b"></form>
               <input name="login"><input type="hidden" name="login_csrf" value="xyz">"#,
        );
        assert_eq!(p.hidden_input("csrf").as_deref(), Some("a&b"));
        assert_eq!(p.login_csrf().unwrap(), "xyz");
        assert_eq!(p.hidden_input("login"), None);
        assert_eq!(p.form_actions(), ["/requests/1/collect"]);
    }

    #[test]
    fn element_text_reads_up_to_the_next_tag() {
        let p = page(r#"<code id="token" class="secret">ey.J&amp;x</code><code id="uri">u</code>"#);
        assert_eq!(p.element_text("token").as_deref(), Some("ey.J&x"));
        assert_eq!(p.element_text("uri").as_deref(), Some("u"));
        assert_eq!(p.element_text("psql"), None);
    }

    #[test]
    fn set_cookie_values_are_parsed_with_path_and_removal() {
        let (c, removed) =
            parse_set_cookie("pgbastion_login=t; Path=/login; HttpOnly; Max-Age=3600").unwrap();
        assert_eq!(
            (c.name.as_str(), c.value.as_str(), c.path.as_str()),
            ("pgbastion_login", "t", "/login")
        );
        assert!(!removed);
        assert!(
            parse_set_cookie("pgbastion_session=; Path=/; Max-Age=0")
                .unwrap()
                .1
        );
        assert!(
            cookie_attributes("a=b; HttpOnly; SameSite=Lax")
                .contains(&("samesite".to_owned(), "Lax".to_owned()))
        );
    }

    #[test]
    fn cookie_paths_match_as_browsers_do() {
        assert!(path_matches("/login/local", "/login"));
        assert!(path_matches("/login", "/login"));
        assert!(!path_matches("/loginx", "/login"));
        assert!(path_matches("/anything", "/"));
    }

    #[test]
    fn form_fields_are_url_encoded() {
        assert_eq!(
            form_urlencoded(&[("a", "x y"), ("b", "<&>")]),
            "a=x+y&b=%3C%26%3E"
        );
    }
}
