//! Proves the OpenID Connect provider of the harness over plain HTTP, as the console will use
//! it: discovery, the authorization code flow with PKCE through its sign-in pages, the token
//! and userinfo endpoints, the hostile modes, and that it stops.

use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use harness::OidcProvider;
use harness::oidc::{Tamper, TestUser};
use harness::process::wait_for_exit;
use reqwest::{StatusCode, Url};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Nothing listens there: sign_in stops at the redirect and never requests it.
const REDIRECT_URI: &str = "http://127.0.0.1:9/auth/oidc/callback";

fn start() -> anyhow::Result<OidcProvider> {
    OidcProvider::start(&TestUser::standard(), REDIRECT_URI)
}

async fn discovery(provider: &OidcProvider) -> anyhow::Result<Value> {
    let response = OidcProvider::browser_like_client()?
        .get(provider.discovery_url())
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == StatusCode::OK,
        "discovery: {}",
        response.status()
    );
    Ok(response.json().await?)
}

fn endpoint(discovery: &Value, name: &str) -> anyhow::Result<String> {
    discovery[name]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no {name} in the discovery document: {discovery}"))
}

/// One authorization request as the console makes it: PKCE S256, state and nonce.
struct AuthRequest {
    url: String,
    state: String,
    nonce: String,
    verifier: String,
}

impl AuthRequest {
    async fn new(provider: &OidcProvider) -> anyhow::Result<AuthRequest> {
        let discovery = discovery(provider).await?;
        let state = format!("state-{}", uuid::Uuid::new_v4().simple());
        let nonce = format!("nonce-{}", uuid::Uuid::new_v4().simple());
        // 64 characters of [0-9a-f]: within RFC 7636's 43..128 unreserved characters.
        let verifier = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let url = Url::parse_with_params(
            &endpoint(&discovery, "authorization_endpoint")?,
            &[
                ("response_type", "code"),
                ("client_id", provider.client_id()),
                ("redirect_uri", provider.redirect_uri()),
                ("scope", "openid email profile groups"),
                ("state", &state),
                ("nonce", &nonce),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ],
        )?;
        Ok(AuthRequest {
            url: url.to_string(),
            state,
            nonce,
            verifier,
        })
    }
}

fn query_param(url: &str, name: &str) -> anyhow::Result<Option<String>> {
    Ok(Url::parse(url)?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned()))
}

/// The token endpoint's answer to an authorization code, whatever its status.
async fn exchange(
    provider: &OidcProvider,
    request: &AuthRequest,
    code: &str,
) -> anyhow::Result<(StatusCode, Value)> {
    let token_endpoint = endpoint(&discovery(provider).await?, "token_endpoint")?;
    let response = OidcProvider::browser_like_client()?
        .post(token_endpoint)
        .basic_auth(provider.client_id(), Some(provider.client_secret()))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", provider.redirect_uri()),
            ("code_verifier", &request.verifier),
        ])
        .send()
        .await?;
    let status = response.status();
    Ok((status, response.json().await?))
}

/// Signs `login` in with a fresh browser and returns the request and the callback URL.
async fn sign_in(provider: &OidcProvider, login: &str) -> anyhow::Result<(AuthRequest, String)> {
    let request = AuthRequest::new(provider).await?;
    let browser = OidcProvider::browser_like_client()?;
    let callback = provider.sign_in(&browser, &request.url, login).await?;
    Ok((request, callback))
}

/// Signs `login` in and exchanges the code; the ID token from a successful exchange.
async fn id_token_for(provider: &OidcProvider, login: &str) -> anyhow::Result<String> {
    let (request, callback) = sign_in(provider, login).await?;
    let code = query_param(&callback, "code")?.context("no code in the callback")?;
    let (status, body) = exchange(provider, &request, &code).await?;
    if status != StatusCode::OK {
        bail!("token endpoint answered {status}: {body}");
    }
    body["id_token"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no id_token in {body}"))
}

/// Header and payload of a JWT, decoded without checking anything.
fn decode_jwt(jwt: &str) -> anyhow::Result<(Value, Value)> {
    let mut parts = jwt.split('.');
    let mut part = || -> anyhow::Result<Value> {
        let text = parts.next().context("a JWT has three parts")?;
        Ok(serde_json::from_slice(&URL_SAFE_NO_PAD.decode(text)?)?)
    };
    Ok((part()?, part()?))
}

/// The names of a token's claims: a tampered token has the same ones as an honest token.
fn claim_names(claims: &Value) -> Vec<String> {
    claims
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

async fn jwks_kids(provider: &OidcProvider) -> anyhow::Result<Vec<String>> {
    let jwks_uri = endpoint(&discovery(provider).await?, "jwks_uri")?;
    let jwks: Value = OidcProvider::browser_like_client()?
        .get(jwks_uri)
        .send()
        .await?
        .json()
        .await?;
    Ok(jwks["keys"]
        .as_array()
        .context("no keys in the JWKS")?
        .iter()
        .filter_map(|k| k["kid"].as_str().map(str::to_owned))
        .collect())
}

#[tokio::test]
async fn discovery_names_the_issuer_and_offers_only_s256_pkce() -> anyhow::Result<()> {
    let provider = start()?;
    let discovery = discovery(&provider).await?;
    assert_eq!(discovery["issuer"], provider.issuer());
    assert_eq!(
        discovery["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    let scopes = discovery["scopes_supported"].to_string();
    assert!(scopes.contains("\"groups\""), "scopes: {scopes}");
    Ok(())
}

#[tokio::test]
async fn alice_signs_in_and_her_code_buys_an_id_token_and_userinfo_with_groups_once()
-> anyhow::Result<()> {
    let provider = start()?;
    let (request, callback) = sign_in(&provider, "alice").await?;
    assert!(
        callback.starts_with(REDIRECT_URI),
        "callback {callback} is not at {REDIRECT_URI}"
    );
    assert_eq!(
        query_param(&callback, "state")?.as_deref(),
        Some(request.state.as_str())
    );
    assert_eq!(
        query_param(&callback, "iss")?.as_deref(),
        Some(provider.issuer())
    );
    let code = query_param(&callback, "code")?.context("no code in the callback")?;

    let (status, tokens) = exchange(&provider, &request, &code).await?;
    assert_eq!(status, StatusCode::OK, "token endpoint: {tokens}");
    let (header, claims) = decode_jwt(tokens["id_token"].as_str().context("id_token")?)?;
    assert_eq!(header["alg"], "RS256");
    assert_eq!(claims["iss"], provider.issuer());
    assert_eq!(claims["aud"], provider.client_id());
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["nonce"], request.nonce.as_str());
    // conformIdTokenClaims: email, name and groups come from userinfo, not the ID token.
    assert!(claims.get("groups").is_none(), "claims: {claims}");

    let access_token = tokens["access_token"].as_str().context("access_token")?;
    let userinfo_endpoint = endpoint(&discovery(&provider).await?, "userinfo_endpoint")?;
    let userinfo: Value = OidcProvider::browser_like_client()?
        .get(userinfo_endpoint)
        .bearer_auth(access_token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(userinfo["sub"], "alice");
    assert_eq!(userinfo["email"], "alice@example.com");
    assert_eq!(userinfo["email_verified"], true);
    assert_eq!(userinfo["name"], "Alice Example");
    assert_eq!(userinfo["preferred_username"], "alice");
    assert_eq!(userinfo["groups"], serde_json::json!(["pgb-users"]));

    let (status, again) = exchange(&provider, &request, &code).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "second exchange: {again}");
    assert_eq!(again["error"], "invalid_grant");
    Ok(())
}

#[tokio::test]
async fn a_code_without_its_pkce_verifier_is_refused() -> anyhow::Result<()> {
    let provider = start()?;
    let (mut request, callback) = sign_in(&provider, "bob").await?;
    let code = query_param(&callback, "code")?.context("no code in the callback")?;
    request.verifier = format!("{}x", request.verifier);
    let (status, body) = exchange(&provider, &request, &code).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");
    Ok(())
}

#[tokio::test]
async fn each_tamper_mode_changes_the_id_token_as_described() -> anyhow::Result<()> {
    let provider = start()?;
    let real_kids = jwks_kids(&provider).await?;
    assert_eq!(real_kids.len(), 1, "JWKS kids: {real_kids:?}");

    let (honest_header, honest) = decode_jwt(&id_token_for(&provider, "carol").await?)?;
    assert_eq!(honest_header["kid"], real_kids[0].as_str());

    provider.set_tamper(Tamper::ForeignKey).await?;
    let (header, claims) = decode_jwt(&id_token_for(&provider, "carol").await?)?;
    let kid = header["kid"].as_str().context("kid")?;
    assert!(
        !real_kids.iter().any(|k| k == kid),
        "foreign kid {kid} is in the JWKS"
    );
    assert_eq!(claims["iss"], honest["iss"]);
    assert_eq!(claims["aud"], honest["aud"]);
    assert_eq!(claim_names(&claims), claim_names(&honest));

    provider.set_tamper(Tamper::OtherIssuer).await?;
    let (header, claims) = decode_jwt(&id_token_for(&provider, "carol").await?)?;
    assert_eq!(header["kid"], real_kids[0].as_str());
    assert_eq!(claims["iss"], "http://127.0.0.1:1/other");
    assert_eq!(claims["aud"], honest["aud"]);
    assert_eq!(claim_names(&claims), claim_names(&honest));

    provider.set_tamper(Tamper::BadNonce).await?;
    let (header, claims) = decode_jwt(&id_token_for(&provider, "carol").await?)?;
    assert_eq!(header["kid"], real_kids[0].as_str());
    assert_eq!(claims["nonce"], "forged-nonce");
    assert_eq!(claims["iss"], honest["iss"]);
    assert_eq!(claim_names(&claims), claim_names(&honest));

    provider.set_tamper(Tamper::OtherAudience).await?;
    let (header, claims) = decode_jwt(&id_token_for(&provider, "carol").await?)?;
    assert_eq!(header["kid"], real_kids[0].as_str());
    assert_eq!(claims["aud"], "someone-else");
    assert_eq!(claims["iss"], honest["iss"]);
    assert_eq!(claim_names(&claims), claim_names(&honest));

    provider.set_tamper(Tamper::None).await?;
    let (header, claims) = decode_jwt(&id_token_for(&provider, "carol").await?)?;
    assert_eq!(header["kid"], real_kids[0].as_str());
    assert_eq!(claims["iss"], honest["iss"]);
    assert_eq!(claims["aud"], honest["aud"]);
    Ok(())
}

#[tokio::test]
async fn the_tamper_endpoint_refuses_an_unknown_mode() -> anyhow::Result<()> {
    let provider = start()?;
    let response = OidcProvider::browser_like_client()?
        .post(format!("{}/__test/tamper", provider.issuer()))
        .json(&serde_json::json!({ "mode": "everything" }))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    Ok(())
}

#[tokio::test]
async fn an_unknown_login_fails_sign_in_and_a_known_one_still_works_after_it() -> anyhow::Result<()>
{
    let provider = start()?;
    let request = AuthRequest::new(&provider).await?;
    let browser = OidcProvider::browser_like_client()?;
    let error = provider
        .sign_in(&browser, &request.url, "eve")
        .await
        .expect_err("eve is no user of the provider");
    assert!(
        format!("{error:#}").contains("asked for the login again"),
        "{error:#}"
    );

    // The same browser, whose provider session now names "eve", can still sign in as alice.
    let retry = AuthRequest::new(&provider).await?;
    let callback = provider.sign_in(&browser, &retry.url, "alice").await?;
    let code = query_param(&callback, "code")?.context("no code in the callback")?;
    let (status, tokens) = exchange(&provider, &retry, &code).await?;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let (_, claims) = decode_jwt(tokens["id_token"].as_str().context("id_token")?)?;
    assert_eq!(claims["sub"], "alice");
    Ok(())
}

#[test]
fn dropping_the_provider_stops_its_process() -> anyhow::Result<()> {
    let provider = OidcProvider::start(&[TestUser::new("alice", &["pgb-users"])], REDIRECT_URI)?;
    let pid = provider.pid();
    drop(provider);
    assert!(
        wait_for_exit(pid, Duration::from_secs(5)),
        "the provider (pid {pid}) is still running"
    );
    Ok(())
}
