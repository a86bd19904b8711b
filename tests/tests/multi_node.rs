//! pgbastion past one machine: two gateways (`serve --role gateway`) and a console (`serve
//! --role console`) on one PostgreSQL store, each process with its own data directory and
//! ports but the same key files. Real clients prove that a credential works on both gateways,
//! that revoking it and terminating a session from the console reach the gateway holding the
//! session within 2 s, that the console's live view follows a session of another process, and
//! that a gateway with another signing key is refused, and that a client's cancel sent to the
//! other gateway (as a load balancer may send it) cancels its query. Also: a recording key
//! rotated with its public half retired keeps old recordings verifiable, on the command line and
//! in the console.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use harness::multi_node::{
    add_local_account, cancel_at, cancel_key, connect, counter, live_session, node, send_cancel,
    serve_refused, serve_role,
};
use harness::pg::{self, PgCluster};
use harness::web_client::WebClient;
use harness::{Bastion, Lab, free_port};
use reqwest::StatusCode;
use serde_json::Value;
use tempfile::TempDir;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

const ROOT: &str = "root";
const ROOT_PASSWORD: &str = "root-password-for-multi-node";
/// What a revocation or termination may take to reach the gateway holding the session.
const REACH: Duration = Duration::from_secs(2);

/// Issues a token for alice on `shop` with the CLI against the shared store.
fn issue(bastion: &Bastion) -> Result<String> {
    let out = bastion.cli_ok(&[
        "token",
        "issue",
        "--person",
        "alice",
        "--target",
        "shop",
        "--role",
        pg::SCRAM_USER,
        "--format",
        "json",
    ])?;
    let json: Value = serde_json::from_str(out.trim())?;
    Ok(json["token"].as_str().context("token")?.to_owned())
}

/// Runs a long statement on `client` in the background; its answer is what ends it.
fn running(client: Client) -> tokio::task::JoinHandle<Result<(), tokio_postgres::Error>> {
    tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await.map(|_| ()) })
}

/// Waits for the background statement to fail with FATAL 57P01 (what revocation and
/// termination send) and returns how long after `since` it did.
async fn ended_with_57p01(
    what: &str,
    statement: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    since: Instant,
) -> Result<Duration> {
    let answer = tokio::time::timeout(Duration::from_secs(10), statement)
        .await
        .with_context(|| format!("{what}: the running statement was not ended within 10 s"))??;
    let waited = since.elapsed();
    let err = match answer {
        Ok(()) => bail!("{what}: the statement finished normally"),
        Err(err) => err,
    };
    let db = err
        .as_db_error()
        .with_context(|| format!("{what}: no server error but {err:?}"))?;
    ensure!(
        db.code() == &SqlState::ADMIN_SHUTDOWN && db.severity() == "FATAL",
        "{what}: {db:?}"
    );
    Ok(waited)
}

/// A PostgreSQL store, a target `shop` on a cluster of its own that alice may use, and the
/// directory of the shared key files: what every deployment here starts from. The set-up is
/// done with the CLI of the console node, the first process to load the keys (it creates the
/// shared files, every later one reads them).
struct Deployment {
    store_url: String,
    keys: TempDir,
    console: Bastion,
    _app: PgCluster,
    _store: PgCluster,
}

impl Deployment {
    fn set_up() -> Result<Deployment> {
        let store = PgCluster::start()?;
        store.create_database(harness::lab::PG_STORE_DB)?;
        let store_url = store.superuser_url(harness::lab::PG_STORE_DB);
        let app = PgCluster::start()?;
        let keys = harness::scratch::temp_dir("pgbastion-shared-keys-")?;
        let console = node(&store_url, keys.path(), &[])?;
        console.cli_ok(&["person", "add", "alice", "--group", "dev"])?;
        add_local_account(&console, ROOT, &["--admin"], ROOT_PASSWORD)?;
        let port = app.port().to_string();
        let out = console
            .command(&[
                "target",
                "add",
                "shop",
                "--host",
                "127.0.0.1",
                "--port",
                &port,
                "--database",
                pg::APP_DB,
                "--user",
                pg::SCRAM_USER,
                "--tls",
                "disable",
                "--password-env",
                "UPSTREAM_SECRET",
            ])
            .env("UPSTREAM_SECRET", PgCluster::password(pg::SCRAM_USER))
            .output()?;
        ensure!(
            out.status.success(),
            "target add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        console.cli_ok(&[
            "grant",
            "add",
            "--target",
            "shop",
            "--person",
            "alice",
            "--role",
            pg::SCRAM_USER,
        ])?;
        Ok(Deployment {
            store_url,
            keys,
            console,
            _app: app,
            _store: store,
        })
    }

    /// Another node on the store, with the shared keys and `extra` settings.
    fn node(&self, extra: &[(&str, &str)]) -> Result<Bastion> {
        node(&self.store_url, self.keys.path(), extra)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_and_a_console_share_one_postgres_store() -> Result<()> {
    let deployment = Deployment::set_up()?;
    let console = &deployment.console;
    let gw1 = deployment.node(&[])?;
    let gw2 = deployment.node(&[])?;
    let _console_process = serve_role(console, "console")?;
    let _gw1_process = serve_role(&gw1, "gateway")?;
    let _gw2_process = serve_role(&gw2, "gateway")?;
    ensure!(
        !harness::process::port_open(console.gateway_addr()),
        "the console process listens on a gateway port"
    );
    ensure!(
        !harness::process::port_open(gw1.console_addr()),
        "a gateway process serves the console"
    );
    let store = gateway::store::open(&deployment.store_url).await?;

    // One credential, minted with the shared signing key, works on both gateways; the
    // upstream password the console node sealed opens on both.
    let token = issue(console)?;
    let on_gw1 = connect(&gw1, "alice", "shop", &token, "revoke-gw1").await?;
    let on_gw2 = connect(&gw2, "alice", "shop", &token, "revoke-gw2").await?;
    on_gw1.simple_query("SELECT 1").await?;
    on_gw2.simple_query("SELECT 1").await?;
    live_session(store.as_ref(), "revoke-gw1").await?;
    let revoked = live_session(store.as_ref(), "revoke-gw2").await?;

    // Revoking it ends the live sessions on both gateways.
    let (first, second) = (running(on_gw1), running(on_gw2));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let revoked_at = Instant::now();
    console.cli_ok(&["token", "revoke", &revoked.credential_id.to_string()])?;
    let took_gw1 = ended_with_57p01("revocation on gateway 1", first, revoked_at).await?;
    let took_gw2 = ended_with_57p01("revocation on gateway 2", second, revoked_at).await?;
    eprintln!("revocation reached gateway 1 in {took_gw1:?}, gateway 2 in {took_gw2:?}");
    ensure!(
        took_gw1 < REACH && took_gw2 < REACH,
        "revocation took {took_gw1:?} and {took_gw2:?}"
    );

    // An admin ends a session of gateway 2 from the console; gateway 1's session goes on.
    let token = issue(console)?;
    let stays = connect(&gw1, "alice", "shop", &token, "stays-gw1").await?;
    let ends = connect(&gw2, "alice", "shop", &token, "ends-gw2").await?;
    ends.simple_query("SELECT 1").await?;
    let target = live_session(store.as_ref(), "ends-gw2").await?;
    let root = WebClient::new(&console.console_url())?;
    root.sign_in_local(ROOT, ROOT_PASSWORD).await?;
    let csrf = root.csrf().await?;
    let statement = running(ends);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let path = format!("/sessions/{}/terminate", target.id);
    let asked = Instant::now();
    root.post_form(&path, &[("csrf", &csrf), ("reason", "INC-9 multi node")])
        .await?
        .expect_redirect_path(&format!("/sessions/{}", target.id), "ending the session")?;
    let took = ended_with_57p01("termination on gateway 2", statement, asked).await?;
    eprintln!("termination from the console reached gateway 2 in {took:?}");
    ensure!(took < REACH, "termination took {took:?}");
    let rows = stays.simple_query("SELECT 'still here'").await?;
    ensure!(
        rows.iter().any(|m| matches!(
            m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("still here")
        )),
        "gateway 1's session: {rows:?}"
    );

    // The console's live view follows a session that gateway 2 serves.
    let followed = connect(&gw2, "alice", "shop", &token, "live-gw2").await?;
    followed.simple_query("SELECT 'first on gw2'").await?;
    let session = live_session(store.as_ref(), "live-gw2").await?;
    let mut live = root
        .get_streaming(&format!("/sessions/{}/live?seq=0&status=I", session.id))
        .await?;
    ensure!(
        live.status() == StatusCode::OK,
        "live view: {}",
        live.status()
    );
    read_events(&mut live, "first on gw2").await?;
    followed.simple_query("SELECT 'second on gw2'").await?;
    let second_at = Instant::now();
    read_events(&mut live, "second on gw2").await?;
    eprintln!(
        "the live view showed gateway 2's new statement {:?} after it ran",
        second_at.elapsed()
    );

    // A gateway with a signing key of its own is refused, naming the key and both
    // fingerprints.
    let mut rogue = deployment.node(&[])?;
    let own_key = rogue.data_path().join("own-signing.key");
    rogue.set_env(
        "PGBASTION_CREDENTIALS_SIGNING_KEY",
        &own_key.display().to_string(),
    );
    let log = serve_refused(&rogue, "gateway")?;
    eprintln!("a gateway with its own signing key was refused:\n{log}");
    for needle in [
        "token signing key (credentials.signing_key)",
        &own_key.display().to_string(),
        "--replace-key signing",
    ] {
        ensure!(log.contains(needle), "{needle:?} missing from:\n{log}");
    }
    let fingerprints = log
        .split(|c: char| !c.is_ascii_hexdigit())
        .filter(|word| word.len() == 64)
        .count();
    ensure!(fingerprints >= 2, "both fingerprints are named:\n{log}");
    Ok(())
}

/// A gateway node whose metrics (the cancel counters) are served at the address returned.
fn gateway_with_metrics(deployment: &Deployment) -> Result<(Bastion, SocketAddr)> {
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let bastion = deployment.node(&[("PGBASTION_GATEWAY_METRICS_LISTEN", &metrics.to_string())])?;
    Ok((bastion, metrics))
}

fn cancel_requests(step: &str) -> String {
    format!("pgbastion_cancel_requests_total{{step=\"{step}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_sent_to_the_other_gateway_cancels_the_query_and_a_wrong_secret_does_not()
-> Result<()> {
    let deployment = Deployment::set_up()?;
    let (gw1, gw1_metrics) = gateway_with_metrics(&deployment)?;
    let (gw2, gw2_metrics) = gateway_with_metrics(&deployment)?;
    let _gw1_process = serve_role(&gw1, "gateway")?;
    let _gw2_process = serve_role(&gw2, "gateway")?;
    harness::wait_for_port(gw1_metrics, Duration::from_secs(10))?;
    harness::wait_for_port(gw2_metrics, Duration::from_secs(10))?;

    // The session is on gateway 1; its cancels go to gateway 2.
    let token = issue(&deployment.console)?;
    let client = Arc::new(connect(&gw1, "alice", "shop", &token, "cancel-gw1").await?);
    let cancel_token = client.cancel_token();
    let (process_id, secret) = cancel_key(&cancel_token).await?;
    let sleeper = client.clone();
    let statement = tokio::spawn(async move {
        sleeper
            .simple_query("SELECT pg_sleep(30)")
            .await
            .map(|_| ())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Wrong secrets, one flipped bit and all of them: forwarded, and ignored by gateway 1. Had
    // one been applied, the statement would end within REACH.
    send_cancel(gw2.gateway_addr(), (process_id, secret ^ 1)).await?;
    send_cancel(gw2.gateway_addr(), (process_id, !secret)).await?;
    tokio::time::sleep(REACH).await;
    ensure!(
        !statement.is_finished(),
        "a cancel with a wrong secret ended the statement: {:?}",
        statement.await?
    );

    // The client's own cancel token, its connection made to gateway 2.
    let asked = Instant::now();
    cancel_at(&cancel_token, gw2.gateway_addr()).await?;
    let answer = tokio::time::timeout(Duration::from_secs(10), statement)
        .await
        .context("the cancelled statement did not end within 10 s")??;
    let took = asked.elapsed();
    let err = match answer {
        Ok(()) => bail!("the statement finished normally after {took:?}"),
        Err(err) => err,
    };
    let db = err
        .as_db_error()
        .with_context(|| format!("no server error but {err:?}"))?;
    ensure!(
        db.code() == &SqlState::QUERY_CANCELED && db.severity() == "ERROR",
        "{db:?}"
    );
    eprintln!("a cancel sent to gateway 2 cancelled the query on gateway 1 after {took:?}");
    ensure!(took < REACH, "the cancel took {took:?}");

    // The session goes on: a cancel ends a statement, not a session.
    let rows = client.simple_query("SELECT 'still here'").await?;
    ensure!(
        rows.iter().any(|m| matches!(
            m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("still here")
        )),
        "after the cancel: {rows:?}"
    );

    // Gateway 2 received three and forwarded them; gateway 1 received none from clients and
    // applied one.
    for (step, expected) in [("received", 3.0), ("forwarded", 3.0), ("applied", 0.0)] {
        let got = counter(gw2_metrics, &cancel_requests(step)).await?;
        ensure!(got == expected, "gateway 2 {step}: {got}, not {expected}");
    }
    for (step, expected) in [("received", 0.0), ("forwarded", 0.0), ("applied", 1.0)] {
        let got = counter(gw1_metrics, &cancel_requests(step)).await?;
        ensure!(got == expected, "gateway 1 {step}: {got}, not {expected}");
    }
    Ok(())
}

#[test]
fn split_roles_are_refused_on_a_sqlite_store() -> Result<()> {
    let bastion = Bastion::new()?;
    for role in ["gateway", "console"] {
        let log = serve_refused(&bastion, role)?;
        ensure!(
            log.contains(&format!(
                "--role {role} runs pgbastion as several processes"
            )) && log.contains("needs a PostgreSQL store"),
            "{log}"
        );
    }
    Ok(())
}

/// Reads server-sent events until `needle` shows (or 10 s pass).
async fn read_events(response: &mut reqwest::Response, needle: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut text = String::new();
    while !text.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, response.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(Ok(None)) => bail!("the live view ended before {needle:?}; got:\n{text}"),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => bail!("the live view did not show {needle:?} in 10 s; got:\n{text}"),
        }
    }
    Ok(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_recording_key_keeps_old_recordings_verifiable() -> Result<()> {
    let mut lab = Lab::start(&[])?;
    add_local_account(&lab.bastion, ROOT, &["--admin"], ROOT_PASSWORD)?;
    let issued = lab.scram_target("shop", &[])?;
    lab.psql("shop", &issued.token, "SELECT 'sealed by the old key'")?;
    let old = lab.ended_sessions(1).await?[0].id;
    lab.sealed_recording(old).await?;

    // Rotation: keep the old key's public half, stop, move the key away, start with a new key
    // and the old one retired.
    let old_public = lab.bastion.cli_ok(&["verify", "--show-public-key"])?;
    let retired = lab.bastion.data_path().join("recording-2025.pub");
    std::fs::write(&retired, &old_public)?;
    lab.gateway.stop()?;
    let key = lab.bastion.data_path().join("recording.key");
    std::fs::rename(&key, lab.bastion.data_path().join("recording.key.old"))?;
    lab.bastion.set_env(
        "PGBASTION_RECORDING_RETIRED_PUBLIC_KEYS",
        &retired.display().to_string(),
    );
    lab.gateway = lab.bastion.serve()?;
    harness::wait_for_port(lab.bastion.console_addr(), Duration::from_secs(30))?;
    let new_public = lab.bastion.cli_ok(&["verify", "--show-public-key"])?;
    ensure!(new_public != old_public, "the key was not replaced");
    lab.psql("shop", &issued.token, "SELECT 'sealed by the new key'")?;
    let sessions = lab.ended_sessions(2).await?;
    let new = sessions
        .iter()
        .find(|s| s.id != old)
        .context("the new session")?
        .id;
    lab.sealed_recording(new).await?;

    let all = lab.bastion.cli_ok(&["verify", "--all"])?;
    for id in [old, new] {
        ensure!(
            all.lines()
                .any(|l| l.contains(&id.to_string()) && l.contains("chain intact, sealed")),
            "session {id} does not verify:\n{all}"
        );
    }
    let root = WebClient::new(&lab.bastion.console_url())?;
    root.sign_in_local(ROOT, ROOT_PASSWORD).await?;
    for id in [old, new] {
        let badge = integrity_badge(&root, id, |b| b != "checking").await?;
        ensure!(badge == "verified", "session {id} shows {badge:?}");
    }

    // Without the retired key, the old session's seal is by a key nobody knows: it fails,
    // in `verify` and in the console; the new one still verifies.
    let out = lab
        .bastion
        .command(&["verify", "--all"])
        .env("PGBASTION_RECORDING_RETIRED_PUBLIC_KEYS", "")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        !out.status.success(),
        "verify passed without the old key:\n{stdout}"
    );
    let old_line = stdout
        .lines()
        .find(|l| l.contains(&old.to_string()))
        .with_context(|| format!("no line for {old}:\n{stdout}"))?;
    ensure!(
        !old_line.contains("chain intact, sealed")
            && old_line.contains("not among the public keys given"),
        "the old session verified with no key for it: {old_line}"
    );
    lab.gateway.stop()?;
    lab.bastion
        .set_env("PGBASTION_RECORDING_RETIRED_PUBLIC_KEYS", "");
    lab.gateway = lab.bastion.serve()?;
    harness::wait_for_port(lab.bastion.console_addr(), Duration::from_secs(30))?;
    let root = WebClient::new(&lab.bastion.console_url())?;
    root.sign_in_local(ROOT, ROOT_PASSWORD).await?;
    let badge = integrity_badge(&root, old, |b| b != "checking").await?;
    ensure!(
        badge != "verified",
        "sealed by an unknown key, yet {badge:?}"
    );
    let badge = integrity_badge(&root, new, |b| b != "checking").await?;
    ensure!(badge == "verified", "the new session shows {badge:?}");
    Ok(())
}

/// The integrity badge of a session's page, once `settled` accepts it (the indexer checks
/// recordings in the background), within 15 s.
async fn integrity_badge(
    client: &WebClient,
    id: uuid::Uuid,
    settled: impl Fn(&str) -> bool,
) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let page = client.get(&format!("/sessions/{id}")).await?;
        page.expect(StatusCode::OK, "the session page")?;
        let badge = page
            .element_text("integrity")
            .with_context(|| format!("no integrity badge:\n{}", page.body))?;
        if settled(&badge) || Instant::now() > deadline {
            return Ok(badge);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
