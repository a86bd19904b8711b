//! pgbastion gateway library.
//!
//! The map (see `docs/ARCHITECTURE.md` for the flow of one connection):
//! - [`protocol`]: Postgres v3 framing, the startup phase, typed views of messages.
//! - [`proxy`]: the listener, client handshake (TLS, startup), credential check, upstream login,
//!   and the frame relay.
//! - [`credential`]: short-lived signed tokens that people use as their password.
//! - [`record`]: the tap through which every relayed frame reaches the recorder.
//! - [`store`]: the `Store` trait and its SQLite and PostgreSQL implementations.
//! - [`config`] and [`keys`]: configuration and the key material kept in the data directory.
//! - [`metrics`]: the Prometheus metrics' names and the handles they are recorded through.

pub mod config;
pub mod credential;
pub mod keys;
pub mod metrics;
pub mod protocol;
pub mod proxy;
pub mod record;
pub mod store;
