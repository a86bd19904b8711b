//! Test harness: real components that always clean up.
//!
//! - [`pg::PgCluster`]: a PostgreSQL server per test, TLS on, one role per auth method.
//! - [`pgbastion::Bastion`]: the real `pgbastion` binary with its own data directory and ports.
//! - [`lab::Lab`]: a cluster, a gateway in front of it and a person, for end-to-end tests.
//! - [`clients`]: tokio-postgres over rustls and psql, as the gateway's clients would connect.
//! - [`process::ChildGuard`], [`ports::free_port`]: processes stopped by PID, ports never fixed.

pub mod browser;
pub mod certs;
pub mod clients;
pub mod console;
pub mod faults;
pub mod fuzz;
pub mod lab;
pub mod multi_node;
pub mod oidc;
pub mod pg;
pub mod pgbastion;
pub mod ports;
pub mod process;
pub mod scratch;
pub mod serverlog;
pub mod store_engine;
pub mod web_client;

pub use certs::{IssuedCert, TestCa};
pub use clients::{psql, tokio_postgres_connect};
pub use console::ConsoleLab;
pub use lab::{Issued, Lab};
pub use oidc::OidcProvider;
pub use pg::PgCluster;
pub use pgbastion::{Bastion, pgbastion_bin};
pub use ports::free_port;
pub use process::{ChildGuard, wait_for_port};
