//! The gateway end to end: the real `pgbastion` binary in front of a real PostgreSQL cluster,
//! driven by psql, pgbench, tokio-postgres and psycopg.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use gateway::store::EndReason;
use harness::Lab;
use harness::clients::{psql_with_env, tls_config, tokio_postgres_connect_with};
use harness::pg;
use tokio_postgres::NoTls;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upstream_login_method_and_tls_mode_works_through_psql() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    let cases = [
        ("t_trust", pg::TRUST_USER, "disable"),
        ("t_cleartext", pg::PASSWORD_USER, "disable"),
        ("t_md5", pg::MD5_USER, "disable"),
        ("t_scram", pg::SCRAM_USER, "disable"),
        ("t_scram_tls", pg::SCRAM_USER, "require"),
        ("t_scram_plus", pg::SSL_SCRAM_USER, "require"),
        ("t_verify_full", pg::SSL_SCRAM_USER, "verify-full"),
    ];
    for (target, role, tls) in cases {
        lab.add_target(target, role, tls, &[])?;
        lab.grant(target, role)?;
        let issued = lab.issue(target, role, &[])?;
        let out = lab
            .psql(
                target,
                &issued.token,
                "select current_user, current_setting('pgbastion.identity'), count(*) from items, \
                 (select ssl from pg_stat_ssl where pid = pg_backend_pid()) s group by 1, 2;\n\
                 select ssl from pg_stat_ssl where pid = pg_backend_pid();",
            )
            .with_context(|| format!("target {target} ({role}, tls {tls})"))?;
        let mut lines = out.lines();
        assert_eq!(
            lines.next(),
            Some(format!("{role}|alice|100").as_str()),
            "{target}"
        );
        let upstream_tls = if tls == "disable" { "f" } else { "t" };
        assert_eq!(lines.next(), Some(upstream_tls), "{target}: upstream TLS");
    }
    // The psql command that token issue prints works as printed.
    lab.add_target("printed", pg::SCRAM_USER, "disable", &[])?;
    lab.grant("printed", pg::SCRAM_USER)?;
    let issued = lab.issue("printed", pg::SCRAM_USER, &[])?;
    let uri = issued.json["uri"].as_str().context("uri")?;
    let out = psql_with_env(uri, "select 42", &[("PGPASSWORD", &issued.token)])?;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "42",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granted_role_identity_and_client_parameters_reach_the_server() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    lab.pg.psql(
        pg::APP_DB,
        "create role app_ro login password 'app-ro-secret'; grant select on items to app_ro; \
         grant app_ro to scram_user;",
    )?;
    lab.add_target("shop", pg::SCRAM_USER, "disable", &[])?;
    lab.grant("shop", "app_ro")?;
    let issued = lab.issue("shop", "app_ro", &[])?;
    // No upstream login for app_ro yet: refused with a message an admin can act on.
    let err = lab
        .psql("shop", &issued.token, "select 1")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no upstream login for the granted role"),
        "{err}"
    );
    let out = lab
        .bastion
        .command(&[
            "target",
            "login",
            "add",
            "shop",
            "app_ro",
            "--password-env",
            "ROLE_SECRET",
        ])
        .env("ROLE_SECRET", "app-ro-secret")
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conn = format!(
        "host=127.0.0.1 port={} user=alice dbname=shop password={} sslmode=require application_name=auditing-app \
         options='-c search_path=pg_catalog,public -c work_mem=7MB'",
        lab.bastion.gateway_port, issued.token
    );
    let (client, _task) = tokio_postgres_connect_with(&conn, tls_config(None, None)?).await?;
    let row = client
        .query_one(
            "select current_user::text, session_user::text, current_setting('application_name'), \
             current_setting('search_path'), current_setting('work_mem'), current_setting('pgbastion.identity'), \
             current_setting('pgbastion.credential_id')",
            &[],
        )
        .await?;
    assert_eq!(
        row.get::<_, String>(0),
        "app_ro",
        "the granted role is in effect"
    );
    assert_eq!(
        row.get::<_, String>(1),
        "app_ro",
        "the gateway logged in as the granted role itself"
    );
    assert_eq!(row.get::<_, String>(2), "auditing-app");
    assert_eq!(row.get::<_, String>(3), "pg_catalog,public");
    assert_eq!(row.get::<_, String>(4), "7MB");
    assert_eq!(row.get::<_, String>(5), "alice");
    assert_eq!(row.get::<_, String>(6), issued.credential_id);
    let denied = client.execute("delete from items", &[]).await.unwrap_err();
    assert_eq!(
        denied.code().map(|c| c.code()),
        Some("42501"),
        "app_ro cannot write"
    );
    // The session cannot leave its role: it is that role upstream, not a shared login.
    let escape = client
        .batch_execute("set role scram_user")
        .await
        .unwrap_err();
    assert_eq!(escape.code().map(|c| c.code()), Some("42501"), "{escape}");
    // A client cannot take over someone else's identity at login, in options or parameters.
    let conn = format!(
        "host=127.0.0.1 port={} user=alice dbname=shop password={} sslmode=require \
         options='-c pgbastion.identity=mallory'",
        lab.bastion.gateway_port, issued.token
    );
    let (client, _task) = tokio_postgres_connect_with(&conn, tls_config(None, None)?).await?;
    let row = client
        .query_one(
            "select current_setting('pgbastion.identity'), current_user::text",
            &[],
        )
        .await?;
    assert_eq!(row.get::<_, String>(0), "alice");
    assert_eq!(row.get::<_, String>(1), "app_ro");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_is_faithful_for_extended_protocol_copy_notify_notices_and_large_rows()
-> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    lab.add_target("shop", pg::SCRAM_USER, "require", &[])?;
    lab.grant("shop", pg::SCRAM_USER)?;
    let issued = lab.issue("shop", pg::SCRAM_USER, &[])?;
    let client = lab.client("shop", &issued.token).await?;

    // Extended protocol with typed parameters, a prepared statement reused, NULLs.
    let stmt = client
        .prepare("select $1::int + 1, $2::text, $3::bytea")
        .await?;
    for i in 0..20i32 {
        let row = client
            .query_one(
                &stmt,
                &[&i, &Option::<String>::None, &vec![0u8, 255, i as u8]],
            )
            .await?;
        assert_eq!(row.get::<_, i32>(0), i + 1);
        assert_eq!(row.get::<_, Option<String>>(1), None);
        assert_eq!(row.get::<_, Vec<u8>>(2), vec![0u8, 255, i as u8]);
    }
    // Pipelining: many queries in flight at once.
    let numbers: Vec<i64> = (0..50).collect();
    let params: Vec<[&(dyn tokio_postgres::types::ToSql + Sync); 1]> =
        numbers.iter().map(|i| [i as _]).collect();
    let pending: Vec<_> = params
        .iter()
        .map(|p| client.query_one("select $1::bigint * 2", p))
        .collect();
    for (i, row) in futures::future::try_join_all(pending)
        .await?
        .into_iter()
        .enumerate()
    {
        assert_eq!(row.get::<_, i64>(0), i as i64 * 2);
    }
    // A very large row (bigger than the relay's streaming threshold) both ways.
    let big: Vec<u8> = (0..12 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let row = client
        .query_one("select $1::bytea, length($1::bytea)", &[&big])
        .await?;
    assert_eq!(row.get::<_, i32>(1) as usize, big.len());
    assert!(
        row.get::<_, Vec<u8>>(0) == big,
        "large value came back unchanged"
    );
    // Errors leave the session usable; notices arrive.
    let err = client.simple_query("select 1/0").await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("22012"));
    client
        .batch_execute("do $$ begin raise notice 'hello from the server'; end $$")
        .await?;
    // COPY in and out.
    client
        .batch_execute("create temp table copied(id int, name text)")
        .await?;
    let sink = client.copy_in("copy copied from stdin").await?;
    let data: String = (0..5000).map(|i| format!("{i}\tname {i}\n")).collect();
    futures::pin_mut!(sink);
    futures::SinkExt::send(&mut sink, bytes::Bytes::from(data.clone())).await?;
    let copied = sink.finish().await?;
    assert_eq!(copied, 5000);
    let stream = client.copy_out("copy copied to stdout").await?;
    let chunks: Vec<bytes::Bytes> = futures::TryStreamExt::try_collect(stream).await?;
    let out: Vec<u8> = chunks.concat();
    assert_eq!(String::from_utf8(out)?, data);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_and_server_parameter_changes_are_relayed() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    lab.add_target("shop", pg::SCRAM_USER, "disable", &[])?;
    lab.grant("shop", pg::SCRAM_USER)?;
    let issued = lab.issue("shop", pg::SCRAM_USER, &[])?;
    // psql prints asynchronous notifications it receives.
    let out = lab.psql(
        "shop",
        &issued.token,
        "listen chan; notify chan, 'payload-1'; set application_name = 'changed'; show application_name;",
    )?;
    assert!(out.contains("payload-1"), "notification relayed: {out}");
    assert!(out.contains("changed"), "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_reaches_the_right_backend() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    lab.add_target("shop", pg::SCRAM_USER, "require", &[])?;
    lab.grant("shop", pg::SCRAM_USER)?;
    let issued = lab.issue("shop", pg::SCRAM_USER, &[])?;
    let client = lab.client("shop", &issued.token).await?;
    let bystander = lab.client("shop", &issued.token).await?;
    let cancel = client.cancel_token();
    let started = Instant::now();
    let sleeping = tokio::spawn(async move { client.simple_query("select pg_sleep(30)").await });
    let slow_bystander =
        tokio::spawn(async move { bystander.simple_query("select pg_sleep(2), 'done'").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    cancel
        .cancel_query(tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(
            None, None,
        )?))
        .await?;
    let err = sleeping.await?.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("57014"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        slow_bystander.await?.is_ok(),
        "the other session's query was not cancelled"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_credential_ends_its_live_sessions_within_seconds() -> anyhow::Result<()> {
    let lab = Lab::start(&[("PGBASTION_GATEWAY_REVOCATION_POLL_MILLIS", "200")])?;
    lab.add_target("shop", pg::SCRAM_USER, "disable", &[])?;
    lab.grant("shop", pg::SCRAM_USER)?;
    let doomed = lab.issue("shop", pg::SCRAM_USER, &[])?;
    let kept = lab.issue("shop", pg::SCRAM_USER, &[])?;
    let a = lab.client("shop", &doomed.token).await?;
    let b = lab.client("shop", &kept.token).await?;
    a.simple_query("select 1").await?;
    lab.bastion
        .cli_ok(&["token", "revoke", &doomed.credential_id])?;
    let revoked_at = Instant::now();
    let err = loop {
        match a.simple_query("select 1").await {
            Ok(_) if revoked_at.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Ok(_) => bail!("session still alive 5 s after revocation"),
            Err(e) => break e,
        }
    };
    assert!(revoked_at.elapsed() < Duration::from_secs(5));
    let text = format!("{err:?}");
    assert!(
        text.contains("revoked") || a.is_closed(),
        "client learns why: {text}"
    );
    b.simple_query("select 1")
        .await
        .context("the other credential's session is untouched")?;
    // New logins with the revoked credential are refused.
    let refused = lab
        .psql("shop", &doomed.token, "select 1")
        .unwrap_err()
        .to_string();
    assert!(refused.contains("revoked"), "{refused}");
    let sessions = lab.ended_sessions(1).await?;
    let ended = sessions
        .iter()
        .find(|s| s.credential_id.to_string() == doomed.credential_id)
        .context("session row")?;
    assert_eq!(ended.end_reason, Some(EndReason::Revoked));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_stored_with_who_what_where_and_bytes() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    lab.add_target("shop", pg::SCRAM_USER, "require", &[])?;
    lab.grant("shop", pg::SCRAM_USER)?;
    let issued = lab.issue("shop", pg::SCRAM_USER, &[])?;
    lab.psql("shop", &issued.token, "select * from items")?;
    let sessions = lab.ended_sessions(1).await?;
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    assert_eq!(s.person_login, "alice");
    assert_eq!(s.target_name, "shop");
    assert_eq!(s.db_role, pg::SCRAM_USER);
    assert_eq!(s.credential_id.to_string(), issued.credential_id);
    assert_eq!(s.application_name.as_deref(), Some("psql"));
    assert_eq!(s.tls_version.as_deref(), Some("TLSv1.3"));
    assert!(s.client_addr.starts_with("127.0.0.1:"));
    assert_eq!(s.end_reason, Some(EndReason::ClientQuit));
    assert!(s.bytes_client_to_server > 20, "{s:?}");
    assert!(
        s.bytes_server_to_client > 100 * 10,
        "100 rows came back: {s:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_or_refusing_upstream_gives_a_clear_error_and_is_recorded() -> anyhow::Result<()>
{
    let lab = Lab::start(&[])?;
    // A port nobody listens on.
    let dead_port = harness::free_port().to_string();
    let out = lab
        .bastion
        .command(&[
            "target",
            "add",
            "dead",
            "--host",
            "127.0.0.1",
            "--port",
            &dead_port,
            "--database",
            "app",
            "--user",
            "x",
            "--tls",
            "disable",
        ])
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lab.grant("dead", "x")?;
    let issued = lab.issue("dead", "x", &[])?;
    let err = lab
        .psql("dead", &issued.token, "select 1")
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot connect to target \"dead\""), "{err}");
    assert!(
        !err.contains(&dead_port),
        "the upstream address is not shown to the person: {err}"
    );
    // A wrong upstream password: the server refuses the gateway.
    lab.add_target("wrongpw", pg::SCRAM_USER, "disable", &[])?;
    lab.bastion.cli_ok(&["target", "remove", "wrongpw"])?;
    let port = lab.pg.port().to_string();
    let out = lab
        .bastion
        .command(&[
            "target",
            "add",
            "wrongpw",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--database",
            "app",
            "--user",
            pg::SCRAM_USER,
            "--tls",
            "disable",
            "--password-env",
            "UPSTREAM_SECRET",
        ])
        .env("UPSTREAM_SECRET", "not-the-password")
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lab.grant("wrongpw", pg::SCRAM_USER)?;
    let issued = lab.issue("wrongpw", pg::SCRAM_USER, &[])?;
    let err = lab
        .psql("wrongpw", &issued.token, "select 1")
        .unwrap_err()
        .to_string();
    assert!(err.contains("refused the gateway's login"), "{err}");
    assert!(!err.contains("not-the-password"));
    let sessions = lab.ended_sessions(2).await?;
    let failed: Vec<_> = sessions
        .iter()
        .filter(|s| s.end_reason == Some(EndReason::UpstreamFailed))
        .collect();
    assert_eq!(failed.len(), 2, "{sessions:?}");
    assert!(
        failed
            .iter()
            .any(|s| s.end_detail.as_deref().unwrap_or("").contains("28P01")),
        "{failed:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_termination_reaches_the_client() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    lab.add_target("shop", pg::SCRAM_USER, "disable", &[])?;
    lab.grant("shop", pg::SCRAM_USER)?;
    let issued = lab.issue("shop", pg::SCRAM_USER, &[])?;
    let client = lab.client("shop", &issued.token).await?;
    let pid: i32 = client
        .query_one("select pg_backend_pid()", &[])
        .await?
        .get(0);
    let admin = tokio_postgres::connect(&lab.pg.superuser_url(pg::APP_DB), NoTls).await?;
    tokio::spawn(admin.1);
    admin
        .0
        .execute("select pg_terminate_backend($1)", &[&pid])
        .await?;
    let err = client.simple_query("select 1").await.unwrap_err();
    let text = format!("{err:?}");
    assert!(
        text.contains("57P01") || text.contains("terminating connection") || client.is_closed(),
        "{text}"
    );
    let sessions = lab.ended_sessions(1).await?;
    assert_eq!(
        sessions[0].end_reason,
        Some(EndReason::ServerClosed),
        "{:?}",
        sessions[0]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_runs_in_simple_extended_and_prepared_modes() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    lab.pg
        .psql(pg::APP_DB, "grant create on schema public to scram_user")?;
    lab.add_target("bench", pg::SCRAM_USER, "disable", &[])?;
    lab.grant("bench", pg::SCRAM_USER)?;
    let issued = lab.issue("bench", pg::SCRAM_USER, &[])?;
    let pgbench = pg::postgres_bin_dir()?.join("pgbench");
    let port = lab.bastion.gateway_port.to_string();
    let run = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new(&pgbench)
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "alice"])
            .args(args)
            .arg("bench")
            .env("PGPASSWORD", &issued.token)
            .env("PGSSLMODE", "require")
            .output()?;
        ensure!(
            out.status.success(),
            "pgbench {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    run(&["-i", "-s", "1", "-q"])?;
    for mode in ["simple", "extended", "prepared"] {
        let out = run(&["-M", mode, "-c", "4", "-j", "2", "-t", "50"])?;
        assert!(
            out.contains("number of transactions actually processed: 200/200"),
            "{mode}: {out}"
        );
        assert!(
            out.contains("number of failed transactions: 0"),
            "{mode}: {out}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_from_python_works_through_the_gateway() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    lab.add_target("shop", pg::SCRAM_USER, "require", &[])?;
    lab.grant("shop", pg::SCRAM_USER)?;
    let issued = lab.issue("shop", pg::SCRAM_USER, &[])?;
    let script = r#"
import os, sys, psycopg
with psycopg.connect(os.environ["DSN"], password=os.environ["TOKEN"]) as conn:
    with conn.cursor() as cur:
        cur.execute("select count(*), sum(id) from items where id > %s", (50,))
        print(*cur.fetchone())
        cur.execute("select %s::text, %s::int, %s::bytea", ("héllo", None, b"\x00\x01"))
        print(cur.fetchone())
        with cur.copy("copy (select id from items order by id limit 3) to stdout") as copy:
            print(b"".join(bytes(b) for b in copy).decode().split())
    with conn.pipeline():
        results = [conn.execute("select %s::int * 3", (i,)) for i in range(10)]
    print(sum(r.fetchone()[0] for r in results))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .env(
            "DSN",
            format!(
                "host=127.0.0.1 port={} dbname=shop user=alice sslmode=require",
                lab.bastion.gateway_port
            ),
        )
        .env("TOKEN", &issued.token)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "python failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "50 3775");
    assert_eq!(lines[1], "('héllo', None, b'\\x00\\x01')");
    assert_eq!(lines[2], "['1', '2', '3']");
    assert_eq!(lines[3], "135");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_query_ends_the_session_and_frees_the_server_backend()
-> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    lab.add_target("shop", pg::SCRAM_USER, "disable", &[])?;
    lab.grant("shop", pg::SCRAM_USER)?;
    let issued = lab.issue("shop", pg::SCRAM_USER, &[])?;
    let conn = format!(
        "host=127.0.0.1 port={} user=alice dbname=shop password={} sslmode=require",
        lab.bastion.gateway_port, issued.token
    );
    let (client, connection) = tokio_postgres_connect_with(&conn, tls_config(None, None)?).await?;
    let query = tokio::spawn(async move { client.simple_query("select pg_sleep(2)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The client process dies: its socket closes with the query still running.
    connection.abort();
    assert!(query.await?.is_err());
    let sessions = lab.ended_sessions(1).await?;
    assert_eq!(
        sessions[0].end_reason,
        Some(EndReason::ClientQuit),
        "{:?}",
        sessions[0]
    );
    // The gateway told the server goodbye: the backend leaves once its statement is done.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = lab.pg.psql(
            pg::APP_DB,
            "select count(*) from pg_stat_activity where usename = 'scram_user'",
        )?;
        if left.trim() == "0" {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "server backend still there: {left}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_sessions_then_ends_the_rest_with_a_fatal() -> anyhow::Result<()> {
    let mut lab = Lab::start(&[("PGBASTION_GATEWAY_SHUTDOWN_GRACE_SECS", "2")])?;
    lab.add_target("shop", pg::SCRAM_USER, "disable", &[])?;
    lab.grant("shop", pg::SCRAM_USER)?;
    let issued = lab.issue("shop", pg::SCRAM_USER, &[])?;
    let leaving = lab.client("shop", &issued.token).await?;
    let staying = lab.client("shop", &issued.token).await?;
    staying.simple_query("select 1").await?;
    let signalled = Instant::now();
    lab.gateway.signal(libc::SIGTERM)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // During the grace period: live sessions go on, new connections are refused.
    leaving
        .simple_query("select 'still here'")
        .await
        .context("session works during the grace period")?;
    assert!(
        lab.client("shop", &issued.token).await.is_err(),
        "no new sessions while draining"
    );
    drop(leaving);
    // After it: the remaining session gets a FATAL saying why.
    let err = loop {
        match staying.simple_query("select 1").await {
            Ok(_) => {
                ensure!(
                    signalled.elapsed() < Duration::from_secs(10),
                    "session not ended"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => break e,
        }
    };
    assert!(
        signalled.elapsed() >= Duration::from_secs(2),
        "ended before the grace period was over"
    );
    let text = format!("{err:?}");
    assert!(
        text.contains("shutting down") || staying.is_closed(),
        "{text}"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = lab.gateway.try_wait()? {
            break status;
        }
        ensure!(
            Instant::now() < deadline,
            "gateway still running after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        status.success(),
        "clean exit after SIGTERM: {status}; log:\n{}",
        lab.bastion.log()
    );
    let sessions = lab.ended_sessions(2).await?;
    let mut reasons: Vec<_> = sessions.iter().map(|s| s.end_reason).collect();
    reasons.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(
        reasons,
        vec![
            Some(EndReason::ClientQuit),
            Some(EndReason::GatewayShutdown)
        ]
    );
    Ok(())
}
