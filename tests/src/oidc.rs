//! A real OpenID Connect provider for tests: the npm package `oidc-provider`, run by
//! `tests/js/oidc-provider.mjs` under Node, with one confidential client and a list of users.
//!
//! People sign in on its development pages (a login form where the typed login is the account
//! id, then a consent form); [`OidcProvider::sign_in`] drives them over plain HTTP the way a
//! browser would. [`OidcProvider::set_tamper`] makes the token endpoint hand out forged ID
//! tokens, so tests can prove the console refuses them.
//!
//! What the provider does that a client may not expect:
//! - The ID token carries only `sub` (and `nonce`, `at_hash`, ...): with oidc-provider's default
//!   `conformIdTokenClaims`, email, name and groups come from the userinfo endpoint.
//! - Only S256 PKCE is offered, and PKCE is required.
//! - A login that is not a configured user is not refused with an error: the login form comes
//!   back. [`OidcProvider::sign_in`] reports that as a failure.
//! - Keys, sessions and codes live in the provider's memory and vanish when it stops.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::{StatusCode, Url};
use tempfile::TempDir;

use crate::ports::free_port;
use crate::process::ChildGuard;

/// How long the provider may take to print `ready` (Node starts in well under a second; the
/// key generation adds a little).
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// How many redirects and form pages one sign-in may go through before it is called a loop.
const MAX_SIGN_IN_STEPS: usize = 20;

/// The client the provider knows; the console is configured with it.
const CLIENT_ID: &str = "pgbastion-console";

/// Someone who can sign in at the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestUser {
    /// The login typed on the provider's form, and the `sub` claim.
    pub sub: String,
    pub email: String,
    pub name: String,
    pub groups: Vec<String>,
}

impl TestUser {
    /// `sub` with the email `SUB@example.com` and the name "Sub Example".
    pub fn new(sub: &str, groups: &[&str]) -> TestUser {
        let mut chars = sub.chars();
        let capitalized: String = match chars.next() {
            Some(first) => first.to_uppercase().chain(chars).collect(),
            None => String::new(),
        };
        TestUser {
            sub: sub.to_owned(),
            email: format!("{sub}@example.com"),
            name: format!("{capitalized} Example"),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    /// The cast of the console tests: a user, an approver, an auditor, an admin, and someone
    /// whose only group means nothing to pgbastion.
    pub fn standard() -> Vec<TestUser> {
        vec![
            TestUser::new("alice", &["pgb-users"]),
            TestUser::new("bob", &["pgb-approvers", "pgb-users"]),
            TestUser::new("carol", &["pgb-auditors"]),
            TestUser::new("dave", &["pgb-admins"]),
            TestUser::new("mallory", &["no-such-group"]),
        ]
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "sub": self.sub,
            "email": self.email,
            "name": self.name,
            "groups": self.groups,
        })
    }
}

/// What the token endpoint does to the ID tokens it hands out (see `tests/js/oidc-provider.mjs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// Untouched (the default).
    None,
    /// Same header and claims, signed by a key that is not in the provider's JWKS (other `kid`).
    ForeignKey,
    /// `iss` is `http://127.0.0.1:1/other`, signed with the provider's real key.
    OtherIssuer,
    /// `nonce` is `forged-nonce`, signed with the real key.
    BadNonce,
    /// `aud` is `someone-else`, signed with the real key.
    OtherAudience,
}

impl Tamper {
    pub fn as_str(self) -> &'static str {
        match self {
            Tamper::None => "none",
            Tamper::ForeignKey => "foreign-key",
            Tamper::OtherIssuer => "other-issuer",
            Tamper::BadNonce => "bad-nonce",
            Tamper::OtherAudience => "other-audience",
        }
    }
}

/// A running provider, stopped (by PID) when dropped, also while a failed test unwinds.
#[derive(Debug)]
pub struct OidcProvider {
    // Dropped first: the process stops before its directory goes.
    child: ChildGuard,
    dir: TempDir,
    issuer: String,
    client_secret: String,
    redirect_uri: String,
}

impl OidcProvider {
    /// Starts a provider on a free port that knows `users` and one confidential client
    /// ([`OidcProvider::client_id`], `client_secret_basic`) allowed to return to `redirect_uri`.
    /// Blocks until it listens (at most 15 s); fails with its stderr if it does not.
    pub fn start(users: &[TestUser], redirect_uri: &str) -> anyhow::Result<OidcProvider> {
        OidcProvider::ensure_node_modules()?;
        let client_secret = format!("secret-{}", uuid::Uuid::new_v4().simple());
        // free_port's port may be taken by another process before Node binds it: try anew.
        let mut last_error = None;
        for _ in 0..3 {
            match OidcProvider::start_on(free_port(), users, redirect_uri, &client_secret) {
                Ok(provider) => return Ok(provider),
                Err(StartError::PortTaken(e)) => last_error = Some(e),
                Err(StartError::Other(e)) => return Err(e),
            }
        }
        Err(last_error
            .expect("at least one attempt")
            .context("no free port for the provider"))
    }

    /// Fails with a clear message if `tests/js/node_modules` lacks oidc-provider.
    pub fn ensure_node_modules() -> anyhow::Result<()> {
        let module = js_dir().join("node_modules").join("oidc-provider");
        if !module.join("package.json").is_file() {
            bail!(
                "{} is missing: run scripts/setup (it runs `npm ci` in {})",
                module.display(),
                js_dir().display()
            );
        }
        Ok(())
    }

    fn start_on(
        port: u16,
        users: &[TestUser],
        redirect_uri: &str,
        client_secret: &str,
    ) -> Result<OidcProvider, StartError> {
        let dir = crate::scratch::temp_dir("pgbastion-oidc-")?;
        let issuer = format!("http://127.0.0.1:{port}");
        let config = serde_json::json!({
            "port": port,
            "issuer": issuer,
            "clients": [{
                "client_id": CLIENT_ID,
                "client_secret": client_secret,
                "redirect_uris": [redirect_uri],
            }],
            "users": users.iter().map(TestUser::to_json).collect::<Vec<_>>(),
        });
        let config_path = dir.path().join("config.json");
        std::fs::write(
            &config_path,
            serde_json::to_vec_pretty(&config).context("config")?,
        )
        .with_context(|| format!("cannot write {}", config_path.display()))?;
        let log_path = dir.path().join("provider.log");
        let log = File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;

        let child = Command::new("node")
            .arg(js_dir().join("oidc-provider.mjs"))
            .arg(&config_path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("cannot run node (is Node.js installed? run scripts/setup)")?;
        let mut child = ChildGuard::new("oidc-provider", child).with_grace(Duration::from_secs(3));

        // A thread reads stdout to its end, so the pipe never fills, and reports the `ready`
        // line. oidc-provider prints its notices with console.info (stdout); the script sends
        // them to stderr, but looking for the prefix keeps that from mattering.
        let stdout = child
            .child_mut()
            .stdout
            .take()
            .context("the provider's stdout")?;
        let (ready_tx, ready_rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(issuer) = line.strip_prefix("ready ") {
                    let _ = ready_tx.send(issuer.to_owned());
                }
            }
        });

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match ready_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(announced) if announced == issuer => break,
                Ok(announced) => {
                    return Err(anyhow::anyhow!(
                        "the provider announced {announced}, not {issuer}:\n{}",
                        read_log(&log_path)
                    )
                    .into());
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // stdout closed: the process is exiting; try_wait below sees it soon.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(50))
                }
            }
            if let Some(status) = child.try_wait().context("the provider's status")? {
                let log = read_log(&log_path);
                let error =
                    anyhow::anyhow!("the provider exited ({status}) before it was ready:\n{log}");
                return Err(if log.contains("EADDRINUSE") {
                    StartError::PortTaken(error)
                } else {
                    StartError::Other(error)
                });
            }
            if Instant::now() >= deadline {
                return Err(anyhow::anyhow!(
                    "the provider printed no `ready` line within {READY_TIMEOUT:?}:\n{}",
                    read_log(&log_path)
                )
                .into());
            }
        }

        Ok(OidcProvider {
            child,
            dir,
            issuer,
            client_secret: client_secret.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash (as the provider writes it in `iss`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn client_id(&self) -> &str {
        CLIENT_ID
    }

    pub fn client_secret(&self) -> &str {
        &self.client_secret
    }

    /// The one redirect URI the client may use.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// `ISSUER/.well-known/openid-configuration`
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    /// The Node process's id, e.g. to check that it is gone after a drop.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the provider wrote on stderr so far (warnings, errors, tamper mode changes).
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("provider.log"))
    }

    /// Changes what the token endpoint does to the ID tokens it hands out from now on.
    pub async fn set_tamper(&self, mode: Tamper) -> anyhow::Result<()> {
        let response = OidcProvider::browser_like_client()?
            .post(format!("{}/__test/tamper", self.issuer))
            .json(&serde_json::json!({ "mode": mode.as_str() }))
            .send()
            .await
            .context("cannot reach the provider's tamper endpoint")?;
        let status = response.status();
        if status != StatusCode::NO_CONTENT {
            let body = response.text().await.unwrap_or_default();
            bail!(
                "setting tamper mode {} answered {status}: {body}",
                mode.as_str()
            );
        }
        Ok(())
    }

    /// A client that behaves like a browser for [`OidcProvider::sign_in`]: it keeps cookies
    /// (the provider's interaction and session cookies) and does not follow redirects (so the
    /// sign-in sees each one and never requests the redirect URI itself).
    pub fn browser_like_client() -> anyhow::Result<reqwest::Client> {
        // reqwest is built without a crypto provider of its own (see tests/Cargo.toml) and
        // needs one installed even for plain HTTP.
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(15))
            .build()
            .context("cannot build an HTTP client")
    }

    /// Signs `login` in through the provider's pages, starting at `authorize_url` (the
    /// console's redirect to the provider), and returns the URL the provider finally redirects
    /// to: the redirect URI with `code`, `state` and `iss` (or with `error`). That URL is not
    /// requested.
    ///
    /// `client` must keep cookies and must not follow redirects:
    /// [`OidcProvider::browser_like_client`] builds one. Use one client per person: a client
    /// that already has a session at the provider is not asked for a login again.
    ///
    /// Fails, with the status and page it got, on anything else, including an unknown login
    /// (the provider then shows the login form again).
    pub async fn sign_in(
        &self,
        client: &reqwest::Client,
        authorize_url: &str,
        login: &str,
    ) -> anyhow::Result<String> {
        self.drive_sign_in(client, authorize_url, login)
            .await
            .with_context(|| {
                format!(
                    "sign-in of {login:?} failed; the provider's log:\n{}",
                    self.log()
                )
            })
    }

    async fn drive_sign_in(
        &self,
        client: &reqwest::Client,
        authorize_url: &str,
        login: &str,
    ) -> anyhow::Result<String> {
        let redirect_uri = Url::parse(&self.redirect_uri).context("the provider's redirect URI")?;
        let mut url = Url::parse(authorize_url).context("the authorize URL")?;
        let mut form: Option<Vec<(String, String)>> = None;
        let mut logins_sent = 0;

        for _ in 0..MAX_SIGN_IN_STEPS {
            let request = match form.take() {
                Some(fields) => client.post(url.clone()).form(&fields),
                None => client.get(url.clone()),
            };
            let response = request
                .send()
                .await
                .with_context(|| format!("request to {url} failed"))?;
            let status = response.status();

            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .with_context(|| format!("{url} answered {status} without a Location"))?;
                let next = url
                    .join(location)
                    .with_context(|| format!("{url} redirected to a bad URL {location:?}"))?;
                if same_endpoint(&next, &redirect_uri) {
                    return Ok(next.to_string());
                }
                url = next;
                continue;
            }

            let page = response.text().await.unwrap_or_default();
            if status != StatusCode::OK {
                bail!("{url} answered {status}:\n{page}");
            }
            let page_form = HtmlForm::parse(&page)
                .with_context(|| format!("{url} answered a page without a form:\n{page}"))?;
            let prompt = page_form.field("prompt").unwrap_or_default().to_owned();
            let mut fields = page_form.hidden;
            match prompt.as_str() {
                "login" => {
                    if logins_sent > 0 {
                        bail!(
                            "the provider asked for the login again after {login:?} \
                             (not one of its users?):\n{page}"
                        );
                    }
                    logins_sent += 1;
                    fields.push(("login".to_owned(), login.to_owned()));
                    // The development login page ignores the password, but the field is there.
                    fields.push(("password".to_owned(), "any-password".to_owned()));
                }
                "consent" => {}
                // A page whose script submits its form at once, e.g. the end of the previous
                // session when someone else signs in on this browser: submit it as is.
                "" if page.contains("document.forms[0].submit()") => {}
                other => bail!("{url} shows a form for {other:?}, not login or consent:\n{page}"),
            }
            // The provider writes absolute action URLs; join() also copes with relative ones.
            let action = url
                .join(&page_form.action)
                .with_context(|| format!("bad form action {:?} on {url}", page_form.action))?;
            if same_endpoint(&action, &redirect_uri) {
                // response_mode=form_post: the code is in the form, and the redirect URI must
                // not be requested here.
                bail!(
                    "{url} posts the response to the redirect URI (form_post); \
                     sign_in expects a query response:\n{page}"
                );
            }
            url = action;
            form = Some(fields);
        }
        bail!("no redirect to {redirect_uri} after {MAX_SIGN_IN_STEPS} steps (last: {url})")
    }
}

enum StartError {
    /// Node could not bind the port: another process took it after free_port.
    PortTaken(anyhow::Error),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for StartError {
    fn from(e: anyhow::Error) -> Self {
        StartError::Other(e)
    }
}

/// `tests/js`, where the script and its node_modules are.
fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}

/// Whether `url` is `endpoint` whatever its query and fragment.
fn same_endpoint(url: &Url, endpoint: &Url) -> bool {
    url.scheme() == endpoint.scheme()
        && url.host_str() == endpoint.host_str()
        && url.port_or_known_default() == endpoint.port_or_known_default()
        && url.path() == endpoint.path()
}

/// The first POST form of a page: its action and hidden fields. Only as much HTML as the
/// provider's development pages need: double-quoted attributes, entities in values.
#[derive(Debug)]
struct HtmlForm {
    action: String,
    hidden: Vec<(String, String)>,
}

impl HtmlForm {
    fn parse(page: &str) -> Option<HtmlForm> {
        let start = page.find("<form")?;
        let end = page[start..]
            .find("</form>")
            .map_or(page.len(), |i| start + i);
        let body = &page[start..end];
        let form_tag = &body[..body.find('>')?];
        let action = attribute(form_tag, "action")?;
        let mut hidden = Vec::new();
        let mut rest = body;
        while let Some(i) = rest.find("<input") {
            rest = &rest[i..];
            let tag_end = rest.find('>').unwrap_or(rest.len());
            let tag = &rest[..tag_end];
            if attribute(tag, "type").as_deref() == Some("hidden")
                && let Some(name) = attribute(tag, "name")
            {
                hidden.push((name, attribute(tag, "value").unwrap_or_default()));
            }
            rest = &rest[tag_end..];
        }
        Some(HtmlForm { action, hidden })
    }

    fn field(&self, name: &str) -> Option<&str> {
        self.hidden
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The value of `name="..."` in a tag, entities decoded.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let needle = format!(" {name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let len = tag[start..].find('"')?;
    Some(decode_entities(&tag[start..start + len]))
}

/// The entities an HTML escaper writes in attribute values.
fn decode_entities(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_action_and_hidden_fields_are_read_with_entities_decoded() {
        let page = r#"<h1>Sign-in</h1>
<form autocomplete="off" action="http://127.0.0.1:9/interaction/a&amp;b" method="post">
  <input type="hidden" name="prompt" value="login"/>
  <input required type="text" name="login" placeholder="Enter any login" autofocus="on">
</form>"#;
        let form = HtmlForm::parse(page).expect("a form");
        assert_eq!(form.action, "http://127.0.0.1:9/interaction/a&b");
        assert_eq!(form.hidden, vec![("prompt".to_owned(), "login".to_owned())]);
        assert_eq!(form.field("prompt"), Some("login"));
    }

    #[test]
    fn redirect_uri_matches_whatever_the_query() {
        let endpoint = Url::parse("http://127.0.0.1:8080/auth/callback").unwrap();
        let hit = Url::parse("http://127.0.0.1:8080/auth/callback?code=x&state=y").unwrap();
        let miss = Url::parse("http://127.0.0.1:8081/auth/callback?code=x").unwrap();
        assert!(same_endpoint(&hit, &endpoint));
        assert!(!same_endpoint(&miss, &endpoint));
    }

    #[test]
    fn standard_users_have_example_emails_and_names() {
        let users = TestUser::standard();
        assert_eq!(users.len(), 5);
        assert_eq!(users[0].email, "alice@example.com");
        assert_eq!(users[0].name, "Alice Example");
        assert_eq!(users[1].groups, ["pgb-approvers", "pgb-users"]);
    }
}
