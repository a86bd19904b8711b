//! Sign-in through an OpenID Connect provider: authorization code flow with PKCE (S256), state
//! and nonce.
//!
//! `start` keeps the flow's secrets (state, nonce, PKCE verifier) in a short-lived cookie,
//! sealed with the data directory's key, so any console process behind a load balancer can
//! finish it. `callback` checks the state, exchanges the code, verifies the ID token (signature
//! against the provider's keys, issuer, audience, expiry, nonce, access-token hash), reads
//! userinfo for email, name and groups, and maps the groups to console roles.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use gateway::config::OidcConfig;
use gateway::store::AuthMethod;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdTokenClaims, CoreProviderMetadata,
};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse as _,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::session::{self, cookie_value};
use super::signin::{safe_next, signed_in};
use super::{ClientAddr, Roles, constant_time_eq};
use crate::console::AppState;
use crate::console::error::{ConsoleError, ConsoleResult};

/// Holds the flow's secrets between `start` and `callback`.
const PENDING_COOKIE: &str = "pgbastion_oidc";
/// What the pending cookie is sealed for (see `SecretBox::seal_for`).
const PENDING_PURPOSE: &[u8] = b"pgbastion oidc pending sign-in";
/// Time a person has at the provider.
const PENDING_TTL_SECS: i64 = 600;
/// Discovery is retried at most this often while the provider is down.
const REDISCOVER_AFTER: Duration = Duration::from_secs(5);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

type OidcClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The configured provider, discovered at start and again when needed.
pub struct Oidc {
    config: OidcConfig,
    redirect: RedirectUrl,
    http: reqwest::Client,
    discovered: Mutex<Discovery>,
}

#[derive(Default)]
struct Discovery {
    client: Option<Arc<OidcClient>>,
    /// When discovery last ran, successful or not.
    at: Option<Instant>,
    last_error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("oidc.issuer_url '{0}' is not a URL")]
    BadIssuer(String),
    #[error("console.public_url gives the redirect URI '{0}', which is not a URL")]
    BadRedirect(String),
    #[error("cannot build an HTTP client: {0}")]
    Http(String),
}

impl Oidc {
    /// Builds the client and tries discovery once. A provider that is down does not stop the
    /// console: sign-in through it says so and retries discovery.
    pub async fn new(config: &OidcConfig, public_url: &str) -> Result<Oidc, OidcError> {
        IssuerUrl::new(config.issuer_url.clone())
            .map_err(|_| OidcError::BadIssuer(config.issuer_url.clone()))?;
        let redirect = format!("{public_url}/auth/oidc/callback");
        let redirect =
            RedirectUrl::new(redirect.clone()).map_err(|_| OidcError::BadRedirect(redirect))?;
        let http = reqwest::Client::builder()
            // Following redirects would let a provider response steer us anywhere (SSRF).
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .build()
            .map_err(|e| OidcError::Http(e.to_string()))?;
        let oidc = Oidc {
            config: config.clone(),
            redirect,
            http,
            discovered: Mutex::new(Discovery::default()),
        };
        match oidc.client(true).await {
            Ok(_) => {
                tracing::info!(issuer = %config.issuer_url, "OpenID Connect provider discovered")
            }
            Err(e) => {
                tracing::warn!(issuer = %config.issuer_url, error = %e, "OpenID Connect provider not reachable yet; sign-in through it will retry")
            }
        }
        Ok(oidc)
    }

    /// The discovered client; discovers (again) when there is none yet or `refresh` asks for
    /// it (the provider may have rotated its keys), at most every `REDISCOVER_AFTER`.
    async fn client(&self, refresh: bool) -> Result<Arc<OidcClient>, ConsoleError> {
        let mut d = self.discovered.lock().await;
        let recent = d.at.is_some_and(|at| at.elapsed() < REDISCOVER_AFTER);
        if let Some(client) = &d.client {
            if !refresh || recent {
                return Ok(client.clone());
            }
        } else if recent {
            return Err(self.unavailable(d.last_error.as_deref().unwrap_or("unknown error")));
        }
        d.at = Some(Instant::now());
        let issuer = IssuerUrl::new(self.config.issuer_url.clone())
            .map_err(|e| ConsoleError::Internal(format!("oidc.issuer_url: {e}")))?;
        match CoreProviderMetadata::discover_async(issuer, &self.http).await {
            Ok(metadata) => {
                let secret = (!self.config.client_secret.is_empty())
                    .then(|| ClientSecret::new(self.config.client_secret.clone()));
                let client = CoreClient::from_provider_metadata(
                    metadata,
                    ClientId::new(self.config.client_id.clone()),
                    secret,
                )
                .set_redirect_uri(self.redirect.clone());
                let client = Arc::new(client);
                d.client = Some(client.clone());
                d.last_error = None;
                Ok(client)
            }
            Err(e) => {
                let why = error_chain(&e);
                d.last_error = Some(why.clone());
                match &d.client {
                    // Keep using what worked: the refresh was only a precaution.
                    Some(client) => Ok(client.clone()),
                    None => Err(self.unavailable(&why)),
                }
            }
        }
    }

    fn unavailable(&self, why: &str) -> ConsoleError {
        ConsoleError::Unavailable(format!(
            "The sign-in provider at {} cannot be reached ({why}). Try again in a minute; if it \
             stays down, an admin can still sign in with a local account.",
            self.config.issuer_url
        ))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// What the pending cookie holds.
#[derive(Serialize, Deserialize)]
struct Pending {
    state: String,
    nonce: String,
    verifier: String,
    next: String,
    /// Unix seconds.
    at: i64,
}

#[derive(Debug, Deserialize)]
pub struct StartQuery {
    #[serde(default)]
    next: Option<String>,
}

pub async fn start(
    State(state): State<AppState>,
    Query(q): Query<StartQuery>,
) -> ConsoleResult<Response> {
    let Some(oidc) = state.oidc.clone() else {
        return Err(ConsoleError::NotFound(
            "Sign-in through an identity provider is not configured here.".into(),
        ));
    };
    let client = oidc.client(false).await?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge);
    for scope in oidc.config.scopes.iter().filter(|s| *s != "openid") {
        request = request.add_scope(Scope::new(scope.clone()));
    }
    let (url, csrf, nonce) = request.url();
    let pending = Pending {
        state: csrf.secret().clone(),
        nonce: nonce.secret().clone(),
        verifier: verifier.secret().clone(),
        next: safe_next(q.next.as_deref()),
        at: Utc::now().timestamp(),
    };
    let json = serde_json::to_vec(&pending).map_err(|e| ConsoleError::Internal(e.to_string()))?;
    let sealed = URL_SAFE_NO_PAD.encode(state.secrets.seal_for(PENDING_PURPOSE, &json));
    // SameSite=Lax: the provider's redirect back to us is a top-level GET, which Lax allows.
    let cookie = format!(
        "{PENDING_COOKIE}={sealed}; Path=/auth/oidc; HttpOnly; Secure; SameSite=Lax; \
         Max-Age={PENDING_TTL_SECS}"
    );
    let mut res = Redirect::to(url.as_str()).into_response();
    session::set_cookie(&mut res, &cookie);
    Ok(res)
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    /// The issuer of the response (RFC 9207), when the provider says.
    iss: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn clear_pending() -> String {
    format!("{PENDING_COOKIE}=; Path=/auth/oidc; HttpOnly; Secure; SameSite=Lax; Max-Age=0")
}

pub async fn callback(
    State(state): State<AppState>,
    Query(q): Query<CallbackQuery>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
) -> Response {
    let result = finish(&state, q, &headers, addr.clone()).await;
    let mut res = match result {
        Ok(res) => res,
        Err(e) => {
            let why = e.to_string();
            // Internal failures are logged, not audited; a refusal for want of a role was
            // audited with the person's login already.
            if !matches!(
                e,
                ConsoleError::Store(_) | ConsoleError::Internal(_) | ConsoleError::NoRole(_)
            ) {
                let _ = state
                    .audit(
                        "(unknown)",
                        "signin.failed",
                        None,
                        serde_json::json!({ "method": "oidc", "why": why }),
                        addr,
                    )
                    .await;
            }
            e.into_response()
        }
    };
    // The pending sign-in is used up whatever happened: a second try starts again.
    session::set_cookie(&mut res, &clear_pending());
    res
}

async fn finish(
    state: &AppState,
    q: CallbackQuery,
    headers: &HeaderMap,
    addr: Option<String>,
) -> ConsoleResult<Response> {
    let oidc = state
        .oidc
        .clone()
        .ok_or_else(|| ConsoleError::NotFound("No identity provider is configured.".into()))?;
    let again = "Go back to the sign-in page and start again.";
    if let Some(error) = q.error {
        let detail = q.error_description.unwrap_or_default();
        return Err(ConsoleError::Forbidden(format!(
            "The sign-in provider refused: {error} {detail}. {again}"
        )));
    }
    let pending = cookie_value(headers, PENDING_COOKIE)
        .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
        .and_then(|sealed| state.secrets.open_for(PENDING_PURPOSE, &sealed).ok())
        .and_then(|json| serde_json::from_slice::<Pending>(&json).ok())
        .ok_or_else(|| {
            ConsoleError::BadRequest(format!(
                "This sign-in was not started here, or was already used. {again}"
            ))
        })?;
    if Utc::now().timestamp() - pending.at > PENDING_TTL_SECS {
        return Err(ConsoleError::BadRequest(format!(
            "This sign-in took too long. {again}"
        )));
    }
    let returned_state = q.state.unwrap_or_default();
    if !constant_time_eq(returned_state.as_bytes(), pending.state.as_bytes()) {
        return Err(ConsoleError::BadRequest(format!(
            "The sign-in response does not belong to this browser's sign-in (state mismatch). \
             {again}"
        )));
    }
    // A response from another provider than ours (mix-up attack) is refused before its code
    // goes anywhere.
    if let Some(iss) = q
        .iss
        .as_deref()
        .filter(|iss| iss.trim_end_matches('/') != oidc.config.issuer_url.trim_end_matches('/'))
    {
        return Err(ConsoleError::BadRequest(format!(
            "The sign-in response comes from another issuer ({iss}) than this console's \
             provider. {again}"
        )));
    }
    let code = q
        .code
        .filter(|c| !c.is_empty() && c.len() <= 4096)
        .ok_or_else(|| ConsoleError::BadRequest(format!("The provider sent no code. {again}")))?;

    let client = oidc.client(false).await?;
    let token = client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|e| ConsoleError::Internal(format!("the provider has no token endpoint: {e}")))?
        .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier))
        .request_async(&oidc.http)
        .await
        .map_err(|e| match e {
            // Not an answer from the provider: it could not be reached.
            openidconnect::RequestTokenError::Request(_) => oidc.unavailable(&error_chain(&e)),
            _ => ConsoleError::Forbidden(format!(
                "The provider did not accept the sign-in code ({}). {again}",
                error_chain(&e)
            )),
        })?;
    let id_token = token.id_token().ok_or_else(|| {
        ConsoleError::Forbidden(format!("The provider sent no ID token. {again}"))
    })?;
    let nonce = Nonce::new(pending.nonce);
    let claims: CoreIdTokenClaims = match id_token.claims(&client.id_token_verifier(), &nonce) {
        Ok(claims) => claims.clone(),
        Err(openidconnect::ClaimsVerificationError::SignatureVerification(_)) => {
            // Maybe the provider rotated its keys since discovery: look once more.
            let fresh = oidc.client(true).await?;
            id_token
                .claims(&fresh.id_token_verifier(), &nonce)
                .map_err(|e| rejected(&e))?
                .clone()
        }
        Err(e) => return Err(rejected(&e)),
    };
    if let Some(expected) = claims.access_token_hash() {
        let alg = id_token.signing_alg().map_err(|e| rejected(&e))?;
        let verifier = client.id_token_verifier();
        let key = id_token.signing_key(&verifier).map_err(|e| rejected(&e))?;
        let actual = AccessTokenHash::from_token(token.access_token(), alg, key)
            .map_err(|e| rejected(&e))?;
        if actual != *expected {
            return Err(ConsoleError::Forbidden(format!(
                "The ID token does not match the access token (at_hash). {again}"
            )));
        }
    }
    let userinfo = fetch_userinfo(&oidc, &client, token.access_token().secret()).await?;
    let subject = claims.subject().as_str();
    if userinfo.get("sub").and_then(|v| v.as_str()) != Some(subject) {
        return Err(ConsoleError::Forbidden(format!(
            "The provider's user information is about someone else than its ID token. {again}"
        )));
    }
    let identity = Identity::from_claims(&oidc.config, &claims, &userinfo)?;
    let roles = Roles::from_groups(&identity.groups, &oidc.config);
    state
        .store
        .upsert_person(
            &identity.login,
            identity.name.as_deref(),
            identity.email.as_deref(),
            &identity.groups,
        )
        .await?;
    if roles.is_empty() {
        state
            .audit(
                &identity.login,
                "signin.denied",
                None,
                serde_json::json!({ "method": "oidc", "groups": identity.groups }),
                addr,
            )
            .await?;
        let groups = if identity.groups.is_empty() {
            "no groups".to_string()
        } else {
            format!("groups {}", identity.groups.join(", "))
        };
        return Err(ConsoleError::NoRole(format!(
            "You signed in as {}, but your {groups} give no role in this console. Ask an admin \
             to add one of your groups to the console's role mapping.",
            identity.login
        )));
    }
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let token = session::create(
        state,
        &identity.login,
        roles,
        AuthMethod::Oidc,
        addr.clone(),
        agent,
    )
    .await?;
    state
        .audit(
            &identity.login,
            "signin",
            None,
            serde_json::json!({ "method": "oidc", "roles": roles.names(), "groups": identity.groups }),
            addr,
        )
        .await?;
    Ok(signed_in(
        &token,
        state.config.console.session_absolute_secs,
        &pending.next,
    ))
}

fn rejected(e: &dyn std::error::Error) -> ConsoleError {
    ConsoleError::Forbidden(format!(
        "The provider's ID token was rejected: {}. Go back to the sign-in page and start again.",
        error_chain(e)
    ))
}

async fn fetch_userinfo(
    oidc: &Oidc,
    client: &OidcClient,
    access_token: &str,
) -> ConsoleResult<serde_json::Value> {
    let Some(url) = client.user_info_url() else {
        // Without userinfo only the ID token speaks; an empty object with its subject then.
        return Ok(serde_json::Value::Null);
    };
    let res = oidc
        .http
        .get(url.url().as_str())
        .bearer_auth(access_token)
        .send()
        .await
        .map_err(|e| oidc.unavailable(&error_chain(&e)))?;
    if !res.status().is_success() {
        return Err(ConsoleError::Forbidden(format!(
            "The provider refused its user information ({}).",
            res.status()
        )));
    }
    res.json().await.map_err(|e| {
        ConsoleError::Forbidden(format!("The provider's user information is not JSON: {e}"))
    })
}

/// Who signed in, from the ID token and userinfo.
#[derive(Debug)]
struct Identity {
    login: String,
    email: Option<String>,
    name: Option<String>,
    groups: Vec<String>,
}

impl Identity {
    fn from_claims(
        config: &OidcConfig,
        claims: &CoreIdTokenClaims,
        userinfo: &serde_json::Value,
    ) -> ConsoleResult<Identity> {
        let from_token = |name: &str| -> Option<String> {
            match name {
                "sub" => Some(claims.subject().to_string()),
                "email" => claims.email().map(|e| e.to_string()),
                "preferred_username" => claims.preferred_username().map(|u| u.to_string()),
                "name" => claims
                    .name()
                    .and_then(|n| n.get(None))
                    .map(|n| n.to_string()),
                _ => None,
            }
        };
        let claim = |name: &str| -> Option<String> {
            userinfo
                .get(name)
                .and_then(|v| v.as_str())
                .map(String::from)
                .or_else(|| from_token(name))
                .filter(|v| !v.is_empty())
        };
        let login = claim(&config.login_claim)
            .or_else(|| claim("sub"))
            .unwrap_or_default();
        if login.is_empty() || login.len() > 200 || login.chars().any(char::is_control) {
            return Err(ConsoleError::Forbidden(format!(
                "The provider's '{}' claim is not a usable login.",
                config.login_claim
            )));
        }
        let groups = match userinfo.get(&config.groups_claim) {
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|g| g.as_str())
                .filter(|g| !g.is_empty() && g.len() <= 200)
                .map(String::from)
                .collect(),
            Some(serde_json::Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        };
        Ok(Identity {
            login,
            email: claim(&config.email_claim),
            name: claim(&config.name_claim),
            groups,
        })
    }
}
