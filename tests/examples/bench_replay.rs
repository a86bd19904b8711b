//! How fast a long session opens in the console's replay: `scripts/bench-replay` (not in CI).
//!
//! Starts a console lab (PostgreSQL, the identity provider, `pgbastion serve`), runs one
//! session of `--statements` statements through the gateway (simple queries returning a few
//! rows, prepared statements with parameters, 1% errors), waits for its recording to be
//! sealed, signs in as the lab's local admin, and times what the player does: the session
//! page, the first page of replay data (what the auditor waits for), and every page after it.
//!
//!   PGBASTION_BIN=target/release/pgbastion \
//!     cargo run --release -p pgbastion-tests --example bench_replay -- --statements 10000

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use harness::console::{ROOT_LOGIN, ROOT_PASSWORD};
use harness::web_client::WebClient;
use harness::{ConsoleLab, pg};
use serde_json::Value;

fn statements_arg() -> Result<usize> {
    let mut args = std::env::args().skip(1);
    let mut n = 10_000;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--statements" => {
                n = args
                    .next()
                    .context("--statements needs a number")?
                    .parse()
                    .context("--statements needs a number")?;
            }
            other => bail!("unknown argument {other}; use --statements N"),
        }
    }
    Ok(n)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() -> Result<()> {
    let n = statements_arg()?;
    let lab = ConsoleLab::start(&[])?;
    lab.lab.grant("shop", pg::SCRAM_USER)?;
    let issued = lab.lab.issue("shop", pg::SCRAM_USER, &[])?;
    let ran = Instant::now();
    {
        let client = lab.lab.client("shop", &issued.token).await?;
        let prepared = client
            .prepare("SELECT g, md5(g::text) FROM generate_series(1, $1::int) g")
            .await?;
        for i in 0..n {
            match i % 100 {
                99 => {
                    let _ = client.simple_query("SELECT * FROM no_such_table").await;
                }
                k if k % 2 == 0 => {
                    client
                        .simple_query(&format!(
                            "SELECT {i} AS n, repeat('x', 20) AS pad FROM generate_series(1, 3)"
                        ))
                        .await?;
                }
                _ => {
                    client.query(&prepared, &[&5i32]).await?;
                }
            }
        }
    }
    println!(
        "ran {n} statements through the gateway in {:.1?}",
        ran.elapsed()
    );
    let sessions = lab.lab.ended_sessions(1).await?;
    let id = sessions.first().context("no session")?.id;
    let (events, _) = lab.lab.sealed_recording(id).await?;
    println!("session {id}: {} events recorded and sealed", events.len());

    let web = WebClient::local(&lab, ROOT_LOGIN, ROOT_PASSWORD).await?;
    let t = Instant::now();
    web.get(&format!("/sessions/{id}")).await?;
    let page_html = t.elapsed();

    let mut times = Vec::new();
    let mut statements = 0usize;
    let mut bytes = 0usize;
    let mut query = "seq=0&status=I".to_string();
    let all = Instant::now();
    loop {
        let t = Instant::now();
        let page = web.get(&format!("/sessions/{id}/replay?{query}")).await?;
        times.push(t.elapsed());
        bytes += page.body.len();
        let json: Value = serde_json::from_str(&page.body)?;
        statements += json["entries"]
            .as_array()
            .context("entries")?
            .iter()
            .filter(|e| e["kind"] == "statement")
            .count();
        match json["next"].as_object() {
            Some(next) => {
                query = format!(
                    "seq={}&status={}",
                    next["seq"],
                    next["status"].as_str().unwrap_or("I")
                )
            }
            None => break,
        }
    }
    let total = all.elapsed();
    let first = times[0];
    let mut sorted = times.clone();
    sorted.sort();
    println!("session page (HTML):        {page_html:.1?}");
    println!("first replay page:          {first:.1?}   <- what opening the session waits for");
    println!(
        "all {} pages:               {total:.1?} ({statements} statements, {:.1} MiB of JSON)",
        times.len(),
        bytes as f64 / (1024.0 * 1024.0)
    );
    println!(
        "per page p50 / p95 / max:   {:.1?} / {:.1?} / {:.1?}",
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.95),
        sorted.last().copied().unwrap_or_default()
    );
    Ok(())
}
