//! Proves the harness itself: a cluster lets each role in by its own auth method and no other
//! way, and clusters and child processes are stopped however a test ends.

use std::process::Command;
use std::time::{Duration, Instant};

use harness::clients::{
    psql_with_env, tls_config, tokio_postgres_connect, tokio_postgres_connect_with,
};
use harness::pg::{
    APP_DB, CERT_USER, ITEM_COUNT, MD5_USER, PASSWORD_USER, SCRAM_USER, SSL_SCRAM_USER, TRUST_USER,
};
use harness::process::{pid_alive, port_open};
use harness::{ChildGuard, PgCluster, TestCa, free_port, pgbastion_bin, wait_for_port};
use tokio_postgres::error::SqlState;

/// `role`'s URL for the `app` database with an explicit sslmode.
fn url(pg: &PgCluster, role: &str, sslmode: &str) -> String {
    format!("{}?sslmode={sslmode}", pg.url(role, APP_DB))
}

async fn count_items(client: &tokio_postgres::Client) -> anyhow::Result<i64> {
    Ok(client
        .query_one("SELECT count(*) FROM items", &[])
        .await?
        .get(0))
}

/// Whether the server says this session is encrypted.
async fn session_uses_tls(client: &tokio_postgres::Client) -> anyhow::Result<bool> {
    let sql = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    Ok(client.query_one(sql, &[]).await?.get(0))
}

/// The server logs the method it authenticated each session with (log_connections).
fn assert_logged_method(pg: &PgCluster, role: &str, method: &str) {
    let log = pg.log();
    let found = log.lines().any(|l| {
        l.contains("connection authenticated")
            && l.contains(role)
            && l.contains(&format!("method={method}"))
    });
    assert!(
        found,
        "no {method} authentication of {role} in the server log:\n{log}"
    );
}

fn stored_password(pg: &PgCluster, role: &str) -> String {
    pg.psql(
        "postgres",
        &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'"),
    )
    .expect("query pg_authid")
}

#[tokio::test]
async fn trust_user_logs_in_without_a_password() -> anyhow::Result<()> {
    let pg = PgCluster::start()?;
    let url = format!(
        "postgres://{TRUST_USER}@127.0.0.1:{}/{APP_DB}?sslmode=disable",
        pg.port()
    );
    let (client, _connection) = tokio_postgres_connect(&url, None).await?;
    assert_eq!(count_items(&client).await?, ITEM_COUNT);
    Ok(())
}

#[tokio::test]
async fn password_user_logs_in_with_a_cleartext_password() -> anyhow::Result<()> {
    let pg = PgCluster::start()?;
    let (client, _connection) =
        tokio_postgres_connect(&url(&pg, PASSWORD_USER, "disable"), None).await?;
    assert_eq!(count_items(&client).await?, ITEM_COUNT);
    assert_logged_method(&pg, PASSWORD_USER, "password");
    Ok(())
}

#[tokio::test]
async fn md5_user_logs_in_by_md5_with_an_md5_stored_password() -> anyhow::Result<()> {
    let pg = PgCluster::start()?;
    assert!(stored_password(&pg, MD5_USER).starts_with("md5"));
    let (client, _connection) =
        tokio_postgres_connect(&url(&pg, MD5_USER, "disable"), None).await?;
    assert_eq!(count_items(&client).await?, ITEM_COUNT);
    assert_logged_method(&pg, MD5_USER, "md5");
    Ok(())
}

#[tokio::test]
async fn scram_user_logs_in_by_scram_without_tls() -> anyhow::Result<()> {
    let pg = PgCluster::start()?;
    assert!(stored_password(&pg, SCRAM_USER).starts_with("SCRAM-SHA-256$"));
    let (client, _connection) =
        tokio_postgres_connect(&url(&pg, SCRAM_USER, "disable"), None).await?;
    assert!(!session_uses_tls(&client).await?);
    assert_logged_method(&pg, SCRAM_USER, "scram-sha-256");
    Ok(())
}

#[tokio::test]
async fn ssl_scram_user_logs_in_only_over_tls_verified_against_the_cluster_ca() -> anyhow::Result<()>
{
    let pg = PgCluster::start()?;
    let plain = tokio_postgres_connect(&url(&pg, SSL_SCRAM_USER, "disable"), None).await;
    assert!(plain.is_err(), "hostssl role got in without TLS");

    let (client, _connection) =
        tokio_postgres_connect(&url(&pg, SSL_SCRAM_USER, "require"), Some(pg.ca_pem())).await?;
    assert!(session_uses_tls(&client).await?);
    assert_eq!(count_items(&client).await?, ITEM_COUNT);

    let stranger = TestCa::new("some other CA")?;
    let untrusted = tokio_postgres_connect(
        &url(&pg, SSL_SCRAM_USER, "require"),
        Some(stranger.cert_pem()),
    )
    .await;
    assert!(
        untrusted.is_err(),
        "a certificate from the wrong CA was accepted"
    );
    Ok(())
}

#[tokio::test]
async fn cert_user_logs_in_with_its_client_certificate_and_not_without() -> anyhow::Result<()> {
    let pg = PgCluster::start()?;
    let url = format!(
        "postgres://{CERT_USER}@127.0.0.1:{}/{APP_DB}?sslmode=require",
        pg.port()
    );
    let tls = tls_config(
        Some(pg.ca_pem()),
        Some((pg.client_cert_pem(), pg.client_key_pem())),
    )?;
    let (client, _connection) = tokio_postgres_connect_with(&url, tls).await?;
    assert_eq!(count_items(&client).await?, ITEM_COUNT);
    assert_logged_method(&pg, CERT_USER, "cert");

    assert!(
        tokio_postgres_connect(&url, Some(pg.ca_pem()))
            .await
            .is_err()
    );
    Ok(())
}

#[tokio::test]
async fn wrong_password_is_refused_with_28p01() -> anyhow::Result<()> {
    let pg = PgCluster::start()?;
    for role in [PASSWORD_USER, MD5_USER, SCRAM_USER] {
        let url = format!(
            "postgres://{role}:wrong@127.0.0.1:{}/{APP_DB}?sslmode=disable",
            pg.port()
        );
        let err = tokio_postgres_connect(&url, None)
            .await
            .expect_err("wrong password accepted");
        let code = err
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(|e| e.code());
        assert_eq!(code, Some(&SqlState::INVALID_PASSWORD), "{role}: {err:#}");
    }
    Ok(())
}

#[test]
fn psql_connects_with_verify_full_and_a_client_certificate() -> anyhow::Result<()> {
    let pg = PgCluster::start()?;
    let uri = format!("postgresql://{CERT_USER}@localhost:{}/{APP_DB}", pg.port());
    let (ca, cert, key) = (pg.ca_path(), pg.client_cert_path(), pg.client_key_path());
    let env = [
        ("PGSSLMODE", "verify-full"),
        ("PGSSLROOTCERT", ca.to_str().unwrap()),
        ("PGSSLCERT", cert.to_str().unwrap()),
        ("PGSSLKEY", key.to_str().unwrap()),
    ];
    let output = psql_with_env(&uri, "SELECT count(*) FROM items", &env)?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "psql failed: {stderr}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        ITEM_COUNT.to_string()
    );
    Ok(())
}

#[test]
fn superuser_psql_creates_databases_and_reports_errors() -> anyhow::Result<()> {
    let pg = PgCluster::start()?;
    pg.create_database("scratch")?;
    let out = pg.psql(
        "scratch",
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2); SELECT sum(x) FROM t;",
    )?;
    assert_eq!(out.trim(), "3");
    let err = pg
        .psql("scratch", "SELECT * FROM missing")
        .expect_err("an error must fail");
    assert!(format!("{err:#}").contains("missing"), "{err:#}");
    Ok(())
}

#[test]
fn restart_keeps_the_port_and_replaces_the_postmaster() -> anyhow::Result<()> {
    let mut pg = PgCluster::start()?;
    let (old_pid, port) = (pg.pid(), pg.port());
    pg.restart()?;
    assert_ne!(pg.pid(), old_pid);
    assert!(!pid_alive(old_pid));
    assert_eq!(pg.port(), port);
    assert_eq!(
        pg.psql(APP_DB, "SELECT count(*) FROM items")?.trim(),
        ITEM_COUNT.to_string()
    );
    Ok(())
}

#[test]
fn dropping_a_cluster_stops_its_server_and_deletes_its_files() -> anyhow::Result<()> {
    let pg = PgCluster::start()?;
    let (pid, addr, dir) = (pg.pid(), pg.addr(), pg.data_dir().to_path_buf());
    assert!(pid_alive(pid) && port_open(addr));
    drop(pg);
    assert!(!pid_alive(pid), "postmaster {pid} still running");
    assert!(!port_open(addr), "{addr} still accepts connections");
    assert!(!dir.exists(), "{} still exists", dir.display());
    Ok(())
}

#[test]
fn a_panicking_test_still_stops_its_cluster() {
    let (tx, rx) = std::sync::mpsc::channel();
    let test = std::thread::spawn(move || {
        let pg = PgCluster::start().expect("start");
        tx.send((pg.pid(), pg.addr())).expect("send");
        panic!("the test failed");
    });
    assert!(test.join().is_err(), "the thread was meant to panic");
    let (pid, addr) = rx.recv().expect("the cluster started");
    assert!(!pid_alive(pid), "postmaster {pid} outlived the panic");
    assert!(!port_open(addr));
}

#[test]
fn child_guard_stops_its_child_on_drop() {
    let child = Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("spawn sleep");
    let pid = child.id();
    drop(ChildGuard::new("sleep", child));
    assert!(!pid_alive(pid));
}

#[test]
fn child_guard_kills_a_child_that_ignores_sigterm() {
    let child = Command::new("sh")
        .args(["-c", "trap '' TERM; while true; do sleep 0.05; done"])
        .spawn()
        .expect("spawn sh");
    let pid = child.id();
    // Give the shell time to install its trap, or SIGTERM would end it anyway.
    std::thread::sleep(Duration::from_millis(200));
    let mut guard = ChildGuard::new("stubborn", child).with_grace(Duration::from_millis(300));
    let started = Instant::now();
    let status = guard.stop().expect("stop");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(!pid_alive(pid));
}

#[test]
fn free_ports_are_distinct_and_wait_for_port_times_out_on_a_closed_one() {
    let ports: std::collections::BTreeSet<u16> = (0..50).map(|_| free_port()).collect();
    assert_eq!(ports.len(), 50);
    let closed = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    assert!(wait_for_port(closed, Duration::from_millis(200)).is_err());
}

#[test]
fn pgbastion_binary_is_built_once_and_exists() {
    let first = pgbastion_bin();
    assert!(first.is_file(), "{}", first.display());
    assert_eq!(pgbastion_bin(), first);
}
