//! `/healthz`, `/readyz` and `/metrics`: served without sign-in on the console's address and on
//! the metrics listener (`gateway.metrics_listen`).
//!
//! What they show is meant for a scraper or a load balancer on the open network: component
//! names and whether each is ready, counters whose labels come from small fixed sets. No
//! address, person, SQL or error text: the causes of a failure go to the log.
//!
//! One [`Probe`] per process, published once by `serve` ([`Probe::start`]), as the metrics
//! recorder itself is one per process; the routes read it from there, so the console's router
//! and the metrics listener answer alike.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gateway::store::Store;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// How long the store may take to answer the readiness query.
pub const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// A readiness answer is reused this long, so that probes hammering `/readyz` (it needs no
/// sign-in) cost the store at most one query per second.
const READINESS_TTL: Duration = Duration::from_secs(1);
/// How often histogram samples are folded into their buckets (bounds their memory).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The health endpoints, for any router (they need no state of the router's).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// One component's readiness in a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ready: bool,
    /// Why it is not ready, in a few words; `None` when ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What `/readyz` answers (and `pgbastion status` prints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    /// The names of the checks that failed.
    pub not_ready: Vec<String>,
    pub checks: Vec<Check>,
}

impl Readiness {
    pub fn from_checks(checks: Vec<Check>) -> Readiness {
        let not_ready: Vec<String> = checks
            .iter()
            .filter(|c| !c.ready)
            .map(|c| c.name.clone())
            .collect();
        Readiness {
            ready: not_ready.is_empty(),
            not_ready,
            checks,
        }
    }
}

/// A component `serve` reports ready once it is (a listener bound, the keys loaded).
#[derive(Clone)]
pub struct ReadyFlag(Arc<AtomicBool>);

impl ReadyFlag {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }
}

struct Component {
    name: &'static str,
    /// What the report says while it is not ready.
    waiting: &'static str,
    ready: ReadyFlag,
}

/// The process's health: its metrics, its store and the components it waits for.
pub struct Probe {
    metrics: PrometheusHandle,
    store: Arc<dyn Store>,
    components: Mutex<Vec<Component>>,
    last: tokio::sync::Mutex<Option<(Instant, Readiness)>>,
    /// Whether the store answered last time, to log changes rather than every probe.
    store_was_ok: AtomicBool,
}

static PROBE: OnceLock<Arc<Probe>> = OnceLock::new();

impl Probe {
    /// Installs the Prometheus recorder for the whole process, registers the gateway's
    /// metrics, and publishes the probe for the health routes. Call once, before anything
    /// records a metric. Histogram upkeep runs until `stop`.
    pub fn start(store: Arc<dyn Store>, stop: CancellationToken) -> anyhow::Result<Arc<Probe>> {
        let mut builder = PrometheusBuilder::new();
        for (name, buckets) in gateway::metrics::HISTOGRAM_BUCKETS {
            builder = builder.set_buckets_for_metric(Matcher::Full(name.to_string()), buckets)?;
        }
        let metrics = builder
            .install_recorder()
            .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
        gateway::metrics::get();
        let upkeep = metrics.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(UPKEEP_EVERY) => upkeep.run_upkeep(),
                }
            }
        });
        let probe = Arc::new(Probe {
            metrics,
            store,
            components: Mutex::new(Vec::new()),
            last: tokio::sync::Mutex::new(None),
            store_was_ok: AtomicBool::new(true),
        });
        PROBE
            .set(probe.clone())
            .map_err(|_| anyhow::anyhow!("the health probe was started twice"))?;
        Ok(probe)
    }

    /// Adds a component that is not ready until its flag is set; `waiting` says why while so.
    pub fn component(&self, name: &'static str, waiting: &'static str) -> ReadyFlag {
        let ready = ReadyFlag(Arc::new(AtomicBool::new(false)));
        self.components
            .lock()
            .expect("components lock")
            .push(Component {
                name,
                waiting,
                ready: ready.clone(),
            });
        ready
    }

    /// The store and every component, at most [`READINESS_TTL`] old.
    pub async fn readiness(&self) -> Readiness {
        let mut last = self.last.lock().await;
        if let Some((at, report)) = last.as_ref()
            && at.elapsed() < READINESS_TTL
        {
            return report.clone();
        }
        let mut checks = vec![self.check_store().await];
        for c in self.components.lock().expect("components lock").iter() {
            let ready = c.ready.0.load(Ordering::Acquire);
            checks.push(Check {
                name: c.name.to_string(),
                ready,
                detail: (!ready).then(|| c.waiting.to_string()),
            });
        }
        let report = Readiness::from_checks(checks);
        *last = Some((Instant::now(), report.clone()));
        report
    }

    async fn check_store(&self) -> Check {
        let failure = store_answers(self.store.as_ref()).await.err();
        let ok = failure.is_none();
        if self.store_was_ok.swap(ok, Ordering::Relaxed) != ok {
            match &failure {
                Some(why) => tracing::warn!(error = %why, "readiness: the store does not answer"),
                None => tracing::info!("readiness: the store answers again"),
            }
        }
        Check {
            name: "store".into(),
            ready: ok,
            detail: failure.map(|f| f.public().to_string()),
        }
    }
}

/// Why the store is not ready: the full cause for the log, a short one for the report.
#[derive(Debug, thiserror::Error)]
pub enum StoreCheckFailed {
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    #[error("{0}")]
    Failed(gateway::store::StoreError),
}

impl StoreCheckFailed {
    /// What unauthenticated callers may read (store errors can name hosts and users).
    pub fn public(&self) -> &'static str {
        match self {
            StoreCheckFailed::TimedOut(_) => "no answer in time",
            StoreCheckFailed::Failed(_) => "query failed",
        }
    }
}

/// One cheap indexed read (a target by an id no target has), bounded in time.
pub async fn store_answers(store: &dyn Store) -> Result<(), StoreCheckFailed> {
    match tokio::time::timeout(STORE_CHECK_TIMEOUT, store.target_by_id(uuid::Uuid::nil())).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(StoreCheckFailed::Failed(e)),
        Err(_) => Err(StoreCheckFailed::TimedOut(STORE_CHECK_TIMEOUT)),
    }
}

fn probe() -> Option<&'static Arc<Probe>> {
    PROBE.get()
}

fn not_started() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "health checks run only under `pgbastion serve`\n",
    )
        .into_response()
}

/// The process is up and serving HTTP.
async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz() -> Response {
    let Some(probe) = probe() else {
        return not_started();
    };
    let report = probe.readiness().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(report)).into_response()
}

async fn metrics() -> Response {
    let Some(probe) = probe() else {
        return not_started();
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        probe.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_names_what_is_not_ready() {
        let check = |name: &str, ready: bool| Check {
            name: name.into(),
            ready,
            detail: (!ready).then(|| "not listening".into()),
        };
        let report =
            Readiness::from_checks(vec![check("store", true), check("gateway_listener", false)]);
        assert!(!report.ready);
        assert_eq!(report.not_ready, vec!["gateway_listener".to_string()]);
        let json = serde_json::to_value(&report).unwrap();
        assert!(json["checks"][0].get("detail").is_none(), "{json}");
        assert!(Readiness::from_checks(vec![check("store", true)]).ready);
    }
}
