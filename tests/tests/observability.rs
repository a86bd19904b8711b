//! Watching pgbastion: `/metrics` after real traffic, `/healthz` and `/readyz` as the store
//! goes away and comes back, a gateway-only process with its own metrics listener,
//! `pgbastion status`, and logs that name each session's id and person but never a secret.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use harness::clients::install_crypto_provider;
use harness::pg::{self, PgCluster};
use harness::process::port_open;
use harness::web_client::{SESSION_COOKIE, WebClient};
use harness::{Bastion, Lab, free_port};
use serde_json::Value;

fn http() -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// GET `url`: the status code and the body.
async fn get(url: &str) -> (u16, String) {
    let res = http().get(url).send().await.expect(url);
    let status = res.status().as_u16();
    (status, res.text().await.expect("body"))
}

/// The value of the series `name` whose labels are exactly `labels`, from a Prometheus text
/// exposition.
fn sample(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    wanted.sort();
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, mut have) = match series.split_once('{') {
                Some((n, rest)) => (
                    n,
                    rest.trim_end_matches('}')
                        .split(',')
                        .filter(|l| !l.is_empty())
                        .map(str::to_owned)
                        .collect::<Vec<_>>(),
                ),
                None => (series, Vec::new()),
            };
            have.sort();
            (series_name == name && have == wanted)
                .then(|| value.parse().ok())
                .flatten()
        })
}

fn must(body: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(body, name, labels)
        .unwrap_or_else(|| panic!("no series {name}{labels:?} in /metrics:\n{body}"))
}

/// Polls `check` every 100 ms until it holds or `within` passes.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `psql` through the gateway with a password that is not a valid credential.
fn refused_login(lab: &Lab, target: &str, password: &str) {
    let out =
        harness::clients::psql_with_env(&lab.uri(target), "select 1", &[("PGPASSWORD", password)])
            .unwrap();
    assert!(!out.status.success(), "a bad credential was accepted");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
}

#[tokio::test]
async fn metrics_count_real_traffic_by_bounded_labels() {
    let lab = Lab::start(&[]).unwrap();
    let issued = lab.scram_target("shop", &[]).unwrap();
    let metrics_url = format!("{}/metrics", lab.bastion.console_url());

    // Five statements from psql (one Query each), ten Executes of a prepared statement.
    lab.psql(
        "shop",
        &issued.token,
        "select 1;\nselect 2;\nselect 3;\nselect 4;\nselect 5;",
    )
    .unwrap();
    let client = lab.client("shop", &issued.token).await.unwrap();
    let statement = client.prepare("select $1::int + 1").await.unwrap();
    for i in 0..10 {
        let row = client.query_one(&statement, &[&i]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i + 1);
    }
    refused_login(&lab, "shop", "not-a-credential");

    // The refused and the psql connections' tasks end a moment after their clients.
    eventually(
        Duration::from_secs(10),
        "one active connection (the prepared-statement client)",
        || async {
            let (_, body) = get(&metrics_url).await;
            sample(&body, "pgbastion_connections_active", &[]) == Some(1.0)
        },
    )
    .await;
    let (status, body) = get(&metrics_url).await;
    assert_eq!(status, 200, "{body}");
    assert!(must(&body, "pgbastion_connections_total", &[]) >= 3.0);
    assert_eq!(
        must(
            &body,
            "pgbastion_connections_refused_total",
            &[("reason", "authentication")]
        ),
        1.0
    );
    assert_eq!(
        must(
            &body,
            "pgbastion_connections_refused_total",
            &[("reason", "too_many_connections")]
        ),
        0.0
    );
    assert_eq!(
        must(
            &body,
            "pgbastion_authentications_total",
            &[("outcome", "invalid_credential")]
        ),
        1.0
    );
    assert_eq!(
        must(
            &body,
            "pgbastion_authentications_total",
            &[("outcome", "accepted")]
        ),
        2.0
    );
    let statements = must(&body, "pgbastion_statement_duration_seconds_count", &[]);
    assert!(statements >= 15.0, "{statements} statements timed");
    assert!(must(&body, "pgbastion_statement_duration_seconds_sum", &[]) > 0.0);
    for direction in ["client_to_server", "server_to_client"] {
        assert!(must(&body, "pgbastion_bytes_total", &[("direction", direction)]) > 0.0);
        assert!(
            must(
                &body,
                "pgbastion_messages_total",
                &[("direction", direction)]
            ) >= 15.0
        );
    }
    assert_eq!(
        must(&body, "pgbastion_recorder_events_dropped_total", &[]),
        0.0
    );
    assert!(must(&body, "pgbastion_recorder_batch_events_count", &[]) >= 1.0);
    assert!(
        must(
            &body,
            "pgbastion_recorder_commit_duration_seconds_count",
            &[]
        ) >= 1.0
    );
    assert!(sample(&body, "pgbastion_recorder_queued_events", &[]).is_some());
    assert!(
        body.lines().any(|l| l.starts_with("pgbastion_build_info{")
            && l.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
            && l.ends_with(" 1")),
        "no build info:\n{body}"
    );
    // Bounded labels: nobody's name, no target, no SQL.
    for private in ["alice", "shop", "select", pg::SCRAM_USER] {
        assert!(
            !body.contains(private),
            "/metrics mentions {private}:\n{body}"
        );
    }

    drop(client);
    eventually(Duration::from_secs(10), "the session's end", || async {
        let (_, body) = get(&metrics_url).await;
        sample(&body, "pgbastion_connections_active", &[]) == Some(0.0)
            && sample(
                &body,
                "pgbastion_sessions_ended_total",
                &[("reason", "client_quit")],
            ) == Some(2.0)
    })
    .await;

    let (status, body) = get(&format!("{}/healthz", lab.bastion.console_url())).await;
    assert_eq!((status, body.trim()), (200, "ok"));
}

/// `pgbastion status --format json`: the exit status and the report.
fn status_json(bastion: &Bastion) -> (Output, Value) {
    let out = bastion.cli(&["status", "--format", "json"]).unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status printed no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, json)
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|v| v.as_str().expect("a name").to_owned())
        .collect()
}

#[tokio::test]
async fn readiness_follows_the_store_and_status_says_so() {
    let (lab, mut store) = Lab::start_with_pg_store(&[]).unwrap();
    let readyz = format!("{}/readyz", lab.bastion.console_url());

    let (status, body) = get(&readyz).await;
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["ready"], true);
    let checks: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        checks,
        ["store", "keys", "gateway_listener", "console_listener"]
    );
    let (out, json) = status_json(&lab.bastion);
    assert!(out.status.success(), "{json}");
    assert_eq!(json["ready"], true);
    assert_eq!(json["process"]["readiness"]["ready"], true);
    assert_eq!(json["live_sessions"]["total"], 0);

    store.stop().unwrap();
    eventually(Duration::from_secs(20), "/readyz turning 503", || async {
        get(&readyz).await.0 == 503
    })
    .await;
    let (status, last) = get(&readyz).await;
    assert_eq!(status, 503, "{last}");
    let report: Value = serde_json::from_str(&last).unwrap();
    assert_eq!(names(&report["not_ready"]), ["store"], "{report}");
    // Unauthenticated callers learn that the store is down, not where it is.
    assert!(
        !last.contains("127.0.0.1") && !last.contains("postgres"),
        "{last}"
    );

    let (out, json) = status_json(&lab.bastion);
    assert_eq!(out.status.code(), Some(1), "{json}");
    assert_eq!(names(&json["not_ready"]), ["store", "process"], "{json}");
    assert_eq!(json["live_sessions"], Value::Null);
    let text = lab.bastion.cli(&["status"]).unwrap();
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert_eq!(text.status.code(), Some(1));
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("store ") && l.contains("NOT READY")),
        "{stdout}"
    );
    assert!(
        stdout.trim_end().ends_with("NOT READY: store, process"),
        "{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&text.stderr).contains("not ready: store, process"),
        "{text:?}"
    );

    store.start_again().unwrap();
    eventually(Duration::from_secs(30), "/readyz back to 200", || async {
        get(&readyz).await.0 == 200
    })
    .await;
    let (out, json) = status_json(&lab.bastion);
    assert!(out.status.success(), "{json}");
}

#[tokio::test]
async fn a_gateway_only_process_serves_metrics_on_its_own_listener() {
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut lab = Lab::start(&[
        ("PGBASTION_CONSOLE_ENABLED", "false"),
        (
            "PGBASTION_GATEWAY_METRICS_LISTEN",
            &metrics_addr.to_string(),
        ),
    ])
    .unwrap();
    let issued = lab.scram_target("shop", &[]).unwrap();
    harness::wait_for_port(metrics_addr, Duration::from_secs(10)).unwrap();
    assert!(!port_open(lab.bastion.console_addr()), "the console is off");

    let client = lab.client("shop", &issued.token).await.unwrap();
    client.simple_query("select 1").await.unwrap();
    let base = format!("http://{metrics_addr}");
    let (status, body) = get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200, "{body}");
    assert!(must(&body, "pgbastion_connections_total", &[]) >= 1.0);
    assert!(must(&body, "pgbastion_statement_duration_seconds_count", &[]) >= 1.0);
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    let (status, body) = get(&format!("{base}/readyz")).await;
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    let checks: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        checks,
        ["store", "keys", "gateway_listener", "metrics_listener"]
    );

    // `status` finds the process at its metrics listener and counts the live session.
    let (out, json) = status_json(&lab.bastion);
    assert!(out.status.success(), "{json}");
    assert_eq!(json["process"]["url"], base);
    assert_eq!(json["live_sessions"]["total"], 1, "{json}");
    assert_eq!(json["live_sessions"]["by_target"]["shop"], 1, "{json}");
    let text = lab.bastion.cli_ok(&["status"]).unwrap();
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("shop") && l.trim_end().ends_with('1')),
        "{text}"
    );
    assert_eq!(text.lines().last(), Some("ready"), "{text}");

    // No process: not ready, and the store still answers.
    drop(client);
    lab.gateway.stop().unwrap();
    let (out, json) = status_json(&lab.bastion);
    assert_eq!(out.status.code(), Some(1), "{json}");
    assert_eq!(names(&json["not_ready"]), ["process"], "{json}");
}

/// Adds a local console account with `password` (read from stdin, as operators would).
fn add_admin(bastion: &Bastion, login: &str, password: &str) {
    let mut child = bastion
        .command(&["user", "add", login, "--admin", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(password.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// The lines of a key file that hold key material (a PEM body, or a hex key).
fn key_lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .with_context(|| path.display().to_string())
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn logs_name_the_session_and_person_and_never_a_secret() {
    let lab = Lab::start(&[
        ("PGBASTION_LOG_FILTER", "debug"),
        ("PGBASTION_LOG_FORMAT", "json"),
    ])
    .unwrap();
    let issued = lab.scram_target("shop", &[]).unwrap();
    let console_password = "console-password-never-logged";
    add_admin(&lab.bastion, "root", console_password);
    let browser = WebClient::new(&lab.bastion.console_url()).unwrap();
    browser
        .sign_in_local("root", console_password)
        .await
        .unwrap();
    let cookie = browser.cookie(SESSION_COOKIE).expect("session cookie");
    assert!(browser.is_signed_in().await.unwrap());

    // A wrong token that looks right: the real one with the first character of its signature
    // changed (the last one may only hold padding bits).
    let at = issued.token.rfind('.').unwrap() + 1;
    let first = &issued.token[at..at + 1];
    let forged = format!(
        "{}{}{}",
        &issued.token[..at],
        if first == "A" { "B" } else { "A" },
        &issued.token[at + 1..]
    );
    refused_login(&lab, "shop", &forged);
    let upstream_password = PgCluster::password(pg::SCRAM_USER);
    let new_secret = "rotated-secret-never-logged";
    lab.psql(
        "shop",
        &issued.token,
        &format!(
            "select count(*) from items;\n\
             ALTER ROLE {role} PASSWORD '{new_secret}';\n\
             ALTER ROLE {role} PASSWORD '{upstream_password}';",
            role = pg::SCRAM_USER
        ),
    )
    .unwrap();
    let second = lab.issue("shop", pg::SCRAM_USER, &[]).unwrap();
    lab.psql("shop", &second.token, "select 1").unwrap();
    let sessions = lab.ended_sessions(2).await.unwrap();
    assert_eq!(sessions.len(), 2);
    // The recording (with the ALTER ROLE statements) is stored and indexed meanwhile.
    for s in &sessions {
        lab.sealed_recording(s.id).await.unwrap();
    }

    let log = lab.bastion.log();
    let mut secrets = vec![
        ("the token", issued.token.clone()),
        ("the second token", second.token.clone()),
        ("the forged token", forged.clone()),
        ("the upstream password", upstream_password.to_owned()),
        ("the rotated role password", new_secret.to_owned()),
        ("the console session cookie", cookie.clone()),
        ("the console password", console_password.to_owned()),
    ];
    for file in [
        "signing.key",
        "secret.key",
        gateway::record::chain::RECORDING_KEY_FILE,
    ] {
        let lines = key_lines(&lab.bastion.data_path().join(file));
        assert!(!lines.is_empty(), "{file} holds no key material");
        for line in lines {
            secrets.push((file, line));
        }
    }
    for (what, secret) in &secrets {
        let leaks: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(secret.as_str()))
            .collect();
        assert!(
            leaks.is_empty(),
            "{what} is in the serve log:\n{}",
            leaks.join("\n")
        );
    }
    // The token's signature alone (its third part) is not there either.
    let signature = issued.token.rsplit('.').next().unwrap();
    assert!(!log.contains(signature));

    // Every line logged inside a session carries its id and person.
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(lines.len() > 20, "debug logging is on:\n{log}");
    for s in &sessions {
        let id = s.id.to_string();
        let about: Vec<&Value> = lines
            .iter()
            .filter(|l| l["span"]["name"] == "session" && l["span"]["session"] == id.as_str())
            .collect();
        let messages: Vec<&str> = about
            .iter()
            .filter_map(|l| l["fields"]["message"].as_str())
            .collect();
        assert!(
            messages.contains(&"session started") && messages.contains(&"session ended"),
            "session {id}: {messages:?}\n{log}"
        );
        assert!(about.iter().all(|l| l["span"]["person"] == "alice"));
    }
    let started = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "session started")
        .count();
    assert_eq!(started, 2, "every session start is inside its span");
}
