//! Slows down password guessing from one client address, across all accounts (the per-account
//! lock lives in the store, see `signin`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures one address may have within [`WINDOW`].
const MAX_FAILURES: usize = 20;
const WINDOW: Duration = Duration::from_secs(300);
/// Addresses remembered at most, so a flood of spoofed sources cannot grow the map forever.
const MAX_ADDRESSES: usize = 10_000;

#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

impl Throttle {
    /// Whether `addr` may try again now.
    pub fn allows(&self, addr: &str) -> bool {
        let mut map = self.failures.lock().expect("throttle lock");
        let now = Instant::now();
        match map.get_mut(addr) {
            Some(times) => {
                times.retain(|t| now.duration_since(*t) < WINDOW);
                times.len() < MAX_FAILURES
            }
            None => true,
        }
    }

    pub fn failed(&self, addr: &str) {
        let mut map = self.failures.lock().expect("throttle lock");
        let now = Instant::now();
        if map.len() >= MAX_ADDRESSES && !map.contains_key(addr) {
            map.retain(|_, times| times.iter().any(|t| now.duration_since(*t) < WINDOW));
            if map.len() >= MAX_ADDRESSES {
                return;
            }
        }
        map.entry(addr.to_string()).or_default().push(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_stopped_after_too_many_failures_and_others_are_not() {
        let t = Throttle::default();
        for _ in 0..MAX_FAILURES {
            assert!(t.allows("192.0.2.1"));
            t.failed("192.0.2.1");
        }
        assert!(!t.allows("192.0.2.1"));
        assert!(t.allows("192.0.2.2"));
    }
}
