//! Live sessions of this gateway process: their cancel keys and their stop switches.
//!
//! The gateway hands each client its own (process id, secret) pair, so a client never learns the
//! upstream backend's key, and a CancelRequest is routed to the right server with the upstream
//! key. A key that matches no session here goes to the [`Forwarder`]: another gateway sharing
//! the store may hold its session (see [`super::cancel`]). Stop switches end sessions whose
//! credential was revoked, that an admin terminated, or that are still running at shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rand::Rng;
use tokio::sync::watch;
use uuid::Uuid;

use super::cancel::Forwarder;
use crate::metrics::{self, CancelStep};
use crate::store::cancel::CancelKey;
use crate::store::{EndReason, Target, Termination};

/// Why the gateway ends a session, and what the client is told (also the detail of the
/// session's end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopOrder {
    pub reason: EndReason,
    pub message: String,
}

/// Characters of a termination reason shown to the client: a FATAL is read in a terminal, and
/// the whole reason stays in the store.
const SHOWN_REASON_CHARS: usize = 200;
/// Characters of the requester's login shown to the client.
const SHOWN_LOGIN_CHARS: usize = 64;

impl StopOrder {
    /// The order that carries out an admin's termination request: the client reads who ended
    /// the session and why, on one line.
    pub fn terminated(request: &Termination) -> StopOrder {
        StopOrder {
            reason: EndReason::Terminated,
            message: format!(
                "terminating connection: ended by {}: {}",
                one_line(&request.requested_by, SHOWN_LOGIN_CHARS),
                one_line(&request.reason, SHOWN_REASON_CHARS)
            ),
        }
    }
}

/// `text` as one line of at most `max_chars` characters: control characters (newlines, escape
/// sequences) become spaces, runs of white space one space, and a cut is marked with "...".
/// The reason is typed by a person in a browser and printed by the client's terminal.
fn one_line(text: &str, max_chars: usize) -> String {
    let spaced: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let words: Vec<&str> = spaced.split_whitespace().collect();
    let line = words.join(" ");
    if line.chars().count() <= max_chars {
        return line;
    }
    let kept: String = line.chars().take(max_chars.saturating_sub(3)).collect();
    format!("{}...", kept.trim_end())
}

struct LiveSession {
    session_id: Uuid,
    credential_id: Uuid,
    secret_key: i32,
    target: Arc<Target>,
    upstream_key: Option<(i32, i32)>,
    stop: watch::Sender<Option<StopOrder>>,
}

/// The handle a session keeps; dropping it removes the session from the registry.
pub struct Registration {
    registry: Arc<Registry>,
    pub process_id: i32,
    pub secret_key: i32,
    pub stop: watch::Receiver<Option<StopOrder>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry
            .sessions
            .lock()
            .expect("registry lock")
            .remove(&self.process_id);
    }
}

/// What a cancel key finds among the live sessions here.
enum Lookup {
    /// A live session with this key, and the target and upstream key to cancel it with.
    Cancellable(Arc<Target>, (i32, i32)),
    /// A live session with this key whose server gave no key of its own: nothing to cancel.
    NoUpstreamKey,
    /// No live session here has this key (the process id may be another gateway's, and a wrong
    /// secret is treated the same: process ids of different gateways may collide).
    NotHere,
}

#[derive(Default)]
pub struct Registry {
    sessions: Mutex<HashMap<i32, LiveSession>>,
    /// Where cancel keys not held here go; `None`: this process is the only gateway there is.
    elsewhere: Option<Forwarder>,
}

impl Registry {
    /// A registry that hands the cancel keys it does not hold to `forwarder`.
    pub fn forwarding_to(forwarder: Forwarder) -> Registry {
        Registry {
            sessions: Mutex::default(),
            elsewhere: Some(forwarder),
        }
    }

    /// Registers a session with a fresh random cancel key.
    pub fn register(
        self: &Arc<Self>,
        session_id: Uuid,
        credential_id: Uuid,
        target: Arc<Target>,
        upstream_key: Option<(i32, i32)>,
    ) -> Registration {
        let (stop, stop_rx) = watch::channel(None);
        let mut rng = rand::thread_rng();
        let secret_key: i32 = rng.r#gen();
        let mut sessions = self.sessions.lock().expect("registry lock");
        let process_id = loop {
            // Positive, like real backend pids, and unique among live sessions.
            let pid = rng.gen_range(1..i32::MAX);
            if !sessions.contains_key(&pid) {
                break pid;
            }
        };
        sessions.insert(
            process_id,
            LiveSession {
                session_id,
                credential_id,
                secret_key,
                target,
                upstream_key,
                stop,
            },
        );
        Registration {
            registry: self.clone(),
            process_id,
            secret_key,
            stop: stop_rx,
        }
    }

    /// The target and upstream key to cancel for a key a client sent here, if it matches a
    /// live session here. A key that does not is handed to the forwarder, for the other
    /// gateways; the caller only sees `None`, as it answers the client nothing either way.
    pub fn cancel_route(
        &self,
        process_id: i32,
        secret_key: i32,
    ) -> Option<(Arc<Target>, (i32, i32))> {
        let m = metrics::get();
        m.cancel_request(CancelStep::Received).increment(1);
        match self.lookup(process_id, secret_key) {
            Lookup::Cancellable(target, key) => {
                m.cancel_request(CancelStep::Applied).increment(1);
                Some((target, key))
            }
            Lookup::NoUpstreamKey => None,
            Lookup::NotHere => {
                let key = CancelKey {
                    process_id,
                    secret_key,
                };
                match &self.elsewhere {
                    Some(forwarder) => {
                        forwarder.forward(key);
                    }
                    None => m.cancel_request(CancelStep::Shed).increment(1),
                }
                None
            }
        }
    }

    /// [`Registry::cancel_route`] for a key another gateway forwarded through the store: one
    /// that matches nothing here is dropped, never forwarded again (no request goes round).
    pub fn forwarded_cancel_route(&self, key: CancelKey) -> Option<(Arc<Target>, (i32, i32))> {
        match self.lookup(key.process_id, key.secret_key) {
            Lookup::Cancellable(target, upstream_key) => {
                metrics::get()
                    .cancel_request(CancelStep::Applied)
                    .increment(1);
                Some((target, upstream_key))
            }
            Lookup::NoUpstreamKey | Lookup::NotHere => None,
        }
    }

    fn lookup(&self, process_id: i32, secret_key: i32) -> Lookup {
        let sessions = self.sessions.lock().expect("registry lock");
        let Some(s) = sessions.get(&process_id) else {
            return Lookup::NotHere;
        };
        // Constant-time comparison: the secret is the only thing that authorises a cancel.
        let diff = (s.secret_key ^ secret_key) as u32;
        if diff != 0 {
            return Lookup::NotHere;
        }
        match s.upstream_key {
            Some(key) => Lookup::Cancellable(s.target.clone(), key),
            None => Lookup::NoUpstreamKey,
        }
    }

    /// Stops every live session holding this credential; returns how many.
    pub fn stop_credential(&self, credential_id: Uuid, order: &StopOrder) -> usize {
        self.stop_where(|s| s.credential_id == credential_id, order)
    }

    /// Stops one session by id; returns whether it was live here.
    pub fn stop_session(&self, session_id: Uuid, order: &StopOrder) -> bool {
        self.stop_where(|s| s.session_id == session_id, order) > 0
    }

    pub fn stop_all(&self, order: &StopOrder) -> usize {
        self.stop_where(|_| true, order)
    }

    pub fn len(&self) -> usize {
        self.sessions.lock().expect("registry lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn stop_where(&self, pred: impl Fn(&LiveSession) -> bool, order: &StopOrder) -> usize {
        let sessions = self.sessions.lock().expect("registry lock");
        let mut n = 0;
        for s in sessions.values().filter(|s| pred(s)) {
            s.stop.send_if_modified(|current| {
                // The first order wins: a revoked session stays "revoked" at shutdown.
                if current.is_none() {
                    *current = Some(order.clone());
                    true
                } else {
                    false
                }
            });
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::UpstreamTls;

    fn target() -> Arc<Target> {
        Arc::new(Target {
            id: Uuid::new_v4(),
            name: "shop".into(),
            host: "127.0.0.1".into(),
            port: 5432,
            database: "shop".into(),
            tls_mode: UpstreamTls::Disable,
            ca_pem: None,
            upstream_user: "app".into(),
            upstream_secret_sealed: None,
            enabled: true,
            recording: crate::store::RecordingPolicy::Strict,
            record_max_rows: None,
            record_max_result_bytes: None,
            retention_days: None,
            created_at: chrono::Utc::now(),
        })
    }

    #[test]
    fn cancel_needs_the_right_secret() {
        let registry = Arc::new(Registry::default());
        let reg = registry.register(Uuid::new_v4(), Uuid::new_v4(), target(), Some((42, 4242)));
        assert!(
            registry
                .cancel_route(reg.process_id, reg.secret_key.wrapping_add(1))
                .is_none()
        );
        let (_, key) = registry
            .cancel_route(reg.process_id, reg.secret_key)
            .unwrap();
        assert_eq!(key, (42, 4242));
        drop(reg);
        assert!(registry.is_empty());
    }

    /// A registry forwarding to a queue the test reads.
    fn forwarding() -> (Arc<Registry>, tokio::sync::mpsc::Receiver<CancelKey>) {
        let (forwarder, queued) = Forwarder::new();
        (Arc::new(Registry::forwarding_to(forwarder)), queued)
    }

    #[test]
    fn a_key_not_held_here_is_forwarded_once_and_a_held_one_never() {
        let (registry, mut queued) = forwarding();
        let reg = registry.register(Uuid::new_v4(), Uuid::new_v4(), target(), Some((42, 4242)));
        assert!(
            registry
                .cancel_route(reg.process_id, reg.secret_key)
                .is_some()
        );
        assert!(queued.try_recv().is_err(), "held here: nothing forwarded");

        let unknown = CancelKey {
            process_id: reg.process_id.wrapping_add(1),
            secret_key: 5,
        };
        assert!(
            registry
                .cancel_route(unknown.process_id, unknown.secret_key)
                .is_none()
        );
        assert_eq!(queued.try_recv().ok(), Some(unknown));

        // A wrong secret may be a session of another gateway with the same process id.
        let wrong_secret = CancelKey {
            process_id: reg.process_id,
            secret_key: reg.secret_key ^ 1,
        };
        assert!(
            registry
                .cancel_route(wrong_secret.process_id, wrong_secret.secret_key)
                .is_none()
        );
        assert_eq!(queued.try_recv().ok(), Some(wrong_secret));
    }

    #[test]
    fn a_forwarded_key_is_applied_here_or_dropped_but_never_forwarded_again() {
        let (registry, mut queued) = forwarding();
        let reg = registry.register(Uuid::new_v4(), Uuid::new_v4(), target(), Some((42, 4242)));
        let held = CancelKey {
            process_id: reg.process_id,
            secret_key: reg.secret_key,
        };
        let (_, upstream_key) = registry.forwarded_cancel_route(held).unwrap();
        assert_eq!(upstream_key, (42, 4242));
        for other in [
            CancelKey {
                secret_key: reg.secret_key.wrapping_add(1),
                ..held
            },
            CancelKey {
                process_id: reg.process_id.wrapping_add(1),
                ..held
            },
        ] {
            assert!(registry.forwarded_cancel_route(other).is_none());
        }
        assert!(queued.try_recv().is_err(), "nothing went back to the store");
    }

    #[test]
    fn a_session_without_an_upstream_key_is_neither_cancelled_nor_forwarded() {
        let (registry, mut queued) = forwarding();
        let reg = registry.register(Uuid::new_v4(), Uuid::new_v4(), target(), None);
        assert!(
            registry
                .cancel_route(reg.process_id, reg.secret_key)
                .is_none()
        );
        assert!(queued.try_recv().is_err());
    }

    fn request(by: &str, reason: &str) -> Termination {
        Termination {
            session_id: Uuid::new_v4(),
            requested_by: by.into(),
            reason: reason.into(),
            requested_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn a_termination_tells_who_and_why_on_one_bounded_line() {
        let order =
            StopOrder::terminated(&request("root", "  INC-7:\r\n  dropping\ttables \x1b[31m"));
        assert_eq!(order.reason, EndReason::Terminated);
        assert_eq!(
            order.message,
            "terminating connection: ended by root: INC-7: dropping tables [31m"
        );
        let long = StopOrder::terminated(&request("root", &"é".repeat(1000)));
        let reason = long.message.rsplit(": ").next().unwrap();
        assert_eq!(reason.chars().count(), SHOWN_REASON_CHARS);
        assert!(reason.ends_with("..."), "{reason}");
    }

    #[test]
    fn terminating_a_session_stops_only_it() {
        let registry = Arc::new(Registry::default());
        let cred = Uuid::new_v4();
        let doomed = Uuid::new_v4();
        let a = registry.register(doomed, cred, target(), None);
        let b = registry.register(Uuid::new_v4(), cred, target(), None);
        let order = StopOrder::terminated(&request("root", "INC-7"));
        assert!(registry.stop_session(doomed, &order));
        assert_eq!(a.stop.borrow().as_ref(), Some(&order));
        assert!(b.stop.borrow().is_none(), "same credential, other session");
        assert!(!registry.stop_session(Uuid::new_v4(), &order));
    }

    #[test]
    fn revoking_a_credential_stops_only_its_sessions() {
        let registry = Arc::new(Registry::default());
        let cred = Uuid::new_v4();
        let a = registry.register(Uuid::new_v4(), cred, target(), None);
        let b = registry.register(Uuid::new_v4(), Uuid::new_v4(), target(), None);
        let order = StopOrder {
            reason: EndReason::Revoked,
            message: "revoked".into(),
        };
        assert_eq!(registry.stop_credential(cred, &order), 1);
        assert_eq!(a.stop.borrow().as_ref(), Some(&order));
        assert!(b.stop.borrow().is_none());
        let shutdown = StopOrder {
            reason: EndReason::GatewayShutdown,
            message: "bye".into(),
        };
        registry.stop_all(&shutdown);
        assert_eq!(a.stop.borrow().as_ref(), Some(&order), "first order wins");
        assert_eq!(b.stop.borrow().as_ref(), Some(&shutdown));
    }
}
