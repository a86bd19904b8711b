//! The pgbastion web console, and what it shares with the `pgbastion` command.
//!
//! - [`console`]: the web console (axum): sign-in, access requests, credentials, admin pages.
//! - [`connection`]: the ready-to-paste ways to connect with a credential.
//! - [`validate`]: name rules shared by the console and the command line.

pub mod connection;
pub mod console;
pub mod validate;
