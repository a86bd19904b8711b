//! Free TCP ports, so no test ever depends on a fixed one.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::{Mutex, PoisonError};

/// Ports already handed out in this process. The kernel may return a port again once its
/// probe listener is closed; remembering them keeps two parallel tests from getting the same one.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A TCP port on 127.0.0.1 that was free a moment ago and that no other caller in this process
/// has been given. Another process may still take it before it is used: callers that bind it
/// themselves (PostgreSQL, pgbastion) should retry with a new port if the bind fails.
pub fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0");
        let port = listener
            .local_addr()
            .expect("local address of a bound socket")
            .port();
        drop(listener);
        if HANDED_OUT
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(port)
        {
            return port;
        }
    }
}
