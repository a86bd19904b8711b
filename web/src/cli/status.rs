//! `pgbastion status`: whether this bastion is ready, as `/readyz` says, with the live sessions
//! per target. Reads the store and the key files itself, and asks the running process for its
//! own readiness (listeners bound, keys loaded) over HTTP.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use gateway::config::Config;
use gateway::store::{SessionFilter, SessionPage, SessionStatus, Store};
use serde::Serialize;
use web::console::health::{self, Check, Readiness};

use super::output::terminal_cell;
use super::redact_url;
use super::token::Format;

pub const LONG_ABOUT: &str = "Tell whether this bastion is ready: the store answers, the key \
                  files are there, and the running `pgbastion serve` says it is ready (its \
                  /readyz: listeners bound, keys loaded, store reachable); then the live \
                  sessions (not ended, as the store has them) per target.\n\n\
                  The process is asked at --url, else at gateway.metrics_listen when set, else \
                  at the console's address (console.public_url, or console.listen).\n\n\
                  Exit code 0 when everything is ready, 1 otherwise (the output says what is \
                  not).\n\n\
                  Examples:\n  \
                  pgbastion status\n  \
                  pgbastion status --format json\n  \
                  pgbastion status --url http://10.0.0.7:9187";

/// How long opening the store may take (it also checks its migrations).
const STORE_OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the running process may take to answer.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(5);
/// Live sessions read per query.
const PAGE: i64 = 500;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Where the running process serves /readyz, e.g. http://127.0.0.1:9187 (default: from
    /// the configuration).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// text for people, json (one object) for scripts.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Serialize)]
struct Status {
    #[serde(flatten)]
    readiness: Readiness,
    store_engine: Option<&'static str>,
    process: Process,
    /// `None` when the store cannot be read.
    live_sessions: Option<LiveSessions>,
}

#[derive(Debug, Serialize)]
struct Process {
    url: Option<String>,
    /// What the process answered, if it did.
    readiness: Option<Readiness>,
}

#[derive(Debug, Serialize)]
struct LiveSessions {
    total: usize,
    by_target: BTreeMap<String, usize>,
}

pub async fn run(args: StatusArgs, config: Config) -> anyhow::Result<()> {
    let (store_check, store) = open_store(&config).await;
    let live_sessions = match &store {
        Some(store) => Some(live_sessions(store.as_ref()).await?),
        None => None,
    };
    let url = args.url.clone().or_else(|| process_url(&config));
    let (process_check, readiness) = ask_process(&config, url.as_deref()).await;
    let status = Status {
        readiness: Readiness::from_checks(vec![store_check, keys_check(&config), process_check]),
        store_engine: store.as_ref().map(|s| s.engine()),
        process: Process { url, readiness },
        live_sessions,
    };
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&status)?),
        Format::Text => print_text(&status),
    }
    if !status.readiness.ready {
        anyhow::bail!("not ready: {}", status.readiness.not_ready.join(", "));
    }
    Ok(())
}

/// Opens the store without creating it (a missing SQLite file is a store that is not there)
/// and runs the readiness query `/readyz` runs.
async fn open_store(config: &Config) -> (Check, Option<std::sync::Arc<dyn Store>>) {
    let url = config.store_url();
    let fail = |detail: String| Check {
        name: "store".into(),
        ready: false,
        detail: Some(detail),
    };
    if let Some(path) = sqlite_path(&url)
        && !path.exists()
    {
        return (
            fail(format!(
                "no SQLite store at {} (has `pgbastion serve` run with this configuration?)",
                path.display()
            )),
            None,
        );
    }
    let store = match tokio::time::timeout(STORE_OPEN_TIMEOUT, gateway::store::open(&url)).await {
        Ok(Ok(store)) => store,
        Ok(Err(e)) => return (fail(format!("cannot open {}: {e}", redact_url(&url))), None),
        Err(_) => {
            return (
                fail(format!(
                    "{} did not answer within {STORE_OPEN_TIMEOUT:?}",
                    redact_url(&url)
                )),
                None,
            );
        }
    };
    match health::store_answers(store.as_ref()).await {
        Ok(()) => (
            Check {
                name: "store".into(),
                ready: true,
                detail: None,
            },
            Some(store),
        ),
        Err(e) => (fail(e.to_string()), None),
    }
}

/// The file of a `sqlite://PATH[?options]` URL.
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://")?;
    let path = rest.split('?').next().unwrap_or(rest);
    Some(PathBuf::from(path))
}

/// The key files `serve` loads (and creates on its first start).
fn keys_check(config: &Config) -> Check {
    let files = [
        config.signing_key_path(),
        config.secret_key_path(),
        config.recording_key_path(),
        config.tls_cert_path(),
        config.tls_key_path(),
    ];
    let missing: Vec<String> = files
        .iter()
        .filter(|path| std::fs::File::open(path).is_err())
        .map(|path| path.display().to_string())
        .collect();
    Check {
        name: "keys".into(),
        ready: missing.is_empty(),
        detail: (!missing.is_empty()).then(|| format!("cannot read {}", missing.join(", "))),
    }
}

/// Counts the sessions the store has as not ended, per target, a page at a time.
async fn live_sessions(store: &dyn Store) -> anyhow::Result<LiveSessions> {
    let filter = SessionFilter {
        status: Some(SessionStatus::Live),
        ..SessionFilter::default()
    };
    let mut by_target: BTreeMap<String, usize> = BTreeMap::new();
    let mut total = 0;
    let mut before = None;
    loop {
        let page = store
            .find_sessions(
                &filter,
                &SessionPage {
                    before,
                    limit: PAGE,
                },
            )
            .await
            .context("cannot list the live sessions")?;
        for summary in &page {
            *by_target
                .entry(summary.session.target_name.clone())
                .or_default() += 1;
        }
        total += page.len();
        match page.last() {
            Some(last) if page.len() as i64 == PAGE => before = Some(last.cursor()),
            _ => break,
        }
    }
    Ok(LiveSessions { total, by_target })
}

/// Where the running process answers `/readyz`: the metrics listener, else the console.
fn process_url(config: &Config) -> Option<String> {
    if let Some(addr) = config.gateway.metrics_listen {
        return Some(format!("http://{}", reachable(addr)));
    }
    let console = &config.console;
    if !console.enabled {
        return None;
    }
    if console.public_url.is_empty() {
        let scheme = if console.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        return Some(format!("{scheme}://{}", reachable(console.listen)));
    }
    Some(console.public_url())
}

/// A listen address as a client reaches it: "all interfaces" means this host.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], v4.port()))
        }
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, v6.port()))
        }
        other => other,
    }
}

/// Asks the process at `url` for its readiness.
async fn ask_process(config: &Config, url: Option<&str>) -> (Check, Option<Readiness>) {
    let fail = |detail: String| Check {
        name: "process".into(),
        ready: false,
        detail: Some(detail),
    };
    let Some(url) = url else {
        return (
            fail(
                "the console is off and gateway.metrics_listen is unset: give --url to ask \
                 the running process"
                    .into(),
            ),
            None,
        );
    };
    let readyz = format!("{}/readyz", url.trim_end_matches('/'));
    let readiness = match fetch_readiness(config, &readyz).await {
        Ok(readiness) => readiness,
        Err(e) => return (fail(format!("no answer from {readyz}: {e:#}")), None),
    };
    let check = Check {
        name: "process".into(),
        ready: readiness.ready,
        detail: (!readiness.ready).then(|| {
            format!(
                "{readyz} says not ready: {}",
                readiness.not_ready.join(", ")
            )
        }),
    };
    (check, Some(readiness))
}

async fn fetch_readiness(config: &Config, readyz: &str) -> anyhow::Result<Readiness> {
    let mut client = reqwest::Client::builder()
        .timeout(PROCESS_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    // A console with its own (often self-signed) certificate is trusted as itself.
    if let Some(cert) = &config.console.tls_cert
        && let Ok(pem) = std::fs::read(cert)
    {
        for cert in reqwest::Certificate::from_pem_bundle(&pem).unwrap_or_default() {
            client = client.add_root_certificate(cert);
        }
    }
    let response = client.build()?.get(readyz).send().await?;
    let status = response.status();
    if !matches!(status.as_u16(), 200 | 503) {
        anyhow::bail!("HTTP {status}");
    }
    response
        .json::<Readiness>()
        .await
        .with_context(|| format!("HTTP {status} without a readiness report"))
}

fn print_text(status: &Status) {
    let line = |indent: &str, check: &Check| {
        let state = match (&check.detail, check.ready) {
            (_, true) if check.name == "process" && indent.is_empty() => {
                format!("ready ({})", status.process.url.as_deref().unwrap_or("-"))
            }
            (_, true) => "ready".to_string(),
            (Some(detail), false) => format!("NOT READY: {detail}"),
            (None, false) => "NOT READY".to_string(),
        };
        let name = format!("{indent}{}", check.name);
        println!("{name:<20}{}", terminal_cell(&state));
    };
    for check in &status.readiness.checks {
        line("", check);
        if check.name == "process"
            && let Some(readiness) = &status.process.readiness
        {
            for inner in &readiness.checks {
                line("  ", inner);
            }
        }
    }
    match &status.live_sessions {
        Some(live) => {
            println!("{:<20}{}", "live sessions", live.total);
            for (target, n) in &live.by_target {
                println!("  {:<18}{n}", terminal_cell(target));
            }
        }
        None => println!("{:<20}unknown (the store cannot be read)", "live sessions"),
    }
    if status.readiness.ready {
        println!("ready");
    } else {
        println!(
            "NOT READY: {}",
            terminal_cell(&status.readiness.not_ready.join(", "))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_is_asked_where_it_listens() {
        let mut config = Config::default();
        assert_eq!(
            process_url(&config).as_deref(),
            Some("http://127.0.0.1:8080")
        );
        config.console.listen = "0.0.0.0:8443".parse().unwrap();
        config.console.tls_cert = Some("c.pem".into());
        assert_eq!(
            process_url(&config).as_deref(),
            Some("https://127.0.0.1:8443")
        );
        config.console.public_url = "https://bastion.example.com/".into();
        assert_eq!(
            process_url(&config).as_deref(),
            Some("https://bastion.example.com")
        );
        config.console.enabled = false;
        assert_eq!(process_url(&config), None);
        config.gateway.metrics_listen = Some("[::]:9187".parse().unwrap());
        assert_eq!(process_url(&config).as_deref(), Some("http://[::1]:9187"));
    }

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(
            sqlite_path("sqlite:///var/lib/pgb/pgbastion.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/pgb/pgbastion.db"))
        );
        assert_eq!(sqlite_path("postgres://u@db/pgb"), None);
    }
}
