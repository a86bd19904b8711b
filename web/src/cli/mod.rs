//! Command-line interface: clap definitions and the dispatch to one module per noun.

mod duration;
mod grant;
mod output;
mod person;
mod replay;
mod serve;
mod sessions;
mod status;
mod target;
mod token;
mod user;
mod verify;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use gateway::config::Config;
use gateway::keys;
use gateway::store::Store;

#[derive(Debug, Parser)]
#[command(
    name = "pgbastion",
    version,
    about = "A bastion for PostgreSQL: people connect with short-lived tokens, the gateway logs in \
             upstream with secrets they never see",
    long_about = "A bastion for PostgreSQL. People connect to the gateway with a short-lived signed \
                  token as their password; the gateway checks it and logs in to the target \
                  database with a secret people never see.\n\n\
                  Without a config file pgbastion runs as is: data in ./pgbastion-data (SQLite \
                  store, keys, TLS certificate), gateway on 127.0.0.1:6432. Every setting can \
                  also be set with PGBASTION_<SECTION>_<KEY>, e.g. PGBASTION_GATEWAY_LISTEN.\n\n\
                  Getting started:\n  \
                  pgbastion person add alice --group dev\n  \
                  printf '%s' \"$APP_RO_PASSWORD\" | pgbastion target add shop --host db.internal \
                  --database shop --user app_ro --password-stdin\n  \
                  printf '%s' \"$APP_RW_PASSWORD\" | pgbastion target login add shop app_rw \
                  --password-stdin\n  \
                  pgbastion grant add --target shop --group dev --role app_ro --max-lifetime 8h\n  \
                  pgbastion serve &\n  \
                  pgbastion token issue --person alice --target shop --role app_ro --lifetime 30m"
)]
pub struct Cli {
    /// TOML config file (every key optional).
    #[arg(long, global = true, env = "PGBASTION_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway and the web console (or one of them: --role).
    #[command(long_about = serve::LONG_ABOUT)]
    Serve(serve::ServeArgs),
    /// Create or upgrade the store's tables, then exit.
    #[command(
        long_about = "Create or upgrade the store's tables, then exit. `serve` does this \
                            too; run it alone before starting several gateways on one \
                            PostgreSQL store.\n\nExample:\n  \
                            PGBASTION_STORE_URL=postgres://pgbastion@db/pgbastion pgbastion migrate"
    )]
    Migrate,
    /// Add and list people.
    #[command(subcommand)]
    Person(person::PersonCommand),
    /// Local console accounts (bootstrap and break-glass sign-in).
    #[command(subcommand)]
    User(user::UserCommand),
    /// Add, list and remove target databases and their upstream logins.
    #[command(subcommand)]
    Target(target::TargetCommand),
    /// Let people or groups use a database role on a target.
    #[command(subcommand)]
    Grant(grant::GrantCommand),
    /// Issue, list and revoke tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Check that recordings are complete and unaltered (hash chain and seal).
    #[command(long_about = verify::LONG_ABOUT)]
    Verify(verify::VerifyArgs),
    /// List sessions: who used which target, when, and what their recording holds.
    #[command(long_about = sessions::LONG_ABOUT)]
    Sessions(sessions::SessionsArgs),
    /// Show a recorded session as a psql-like transcript, or export it as JSONL.
    #[command(long_about = replay::LONG_ABOUT)]
    Replay(replay::ReplayArgs),
    /// Tell whether the bastion is ready (store, keys, the running process) and count live
    /// sessions.
    #[command(long_about = status::LONG_ABOUT)]
    Status(status::StatusArgs),
}

/// Runs one command.
/// Runs one command with the configuration `main` loaded (it needs it first, to size the
/// runtime).
pub async fn run(cli: Cli, config: Config) -> anyhow::Result<()> {
    // The rustls default provider is set once for the process, so every TLS user (client leg,
    // upstream leg) agrees on it. Failure means it was already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();

    init_logging(&config)?;
    match cli.command {
        Command::Serve(args) => serve::run(args, config).await,
        Command::Migrate => {
            let ctx = Ctx::open(config).await?;
            println!(
                "{} store {} is up to date",
                ctx.store.engine(),
                redact_url(&ctx.config.store_url())
            );
            Ok(())
        }
        Command::Person(cmd) => person::run(cmd, &Ctx::open(config).await?).await,
        Command::User(cmd) => user::run(cmd, &Ctx::open(config).await?).await,
        Command::Target(cmd) => target::run(cmd, &Ctx::open(config).await?).await,
        Command::Grant(cmd) => grant::run(cmd, &Ctx::open(config).await?).await,
        Command::Token(cmd) => token::run(cmd, &Ctx::open(config).await?).await,
        Command::Verify(args) => verify::run(args, config).await,
        Command::Sessions(args) => sessions::run(args, &Ctx::open(config).await?).await,
        Command::Replay(args) => replay::run(args, &Ctx::open(config).await?).await,
        Command::Status(args) => status::run(args, config).await,
    }
}

/// What the admin commands share: the configuration and an open (migrated) store.
pub struct Ctx {
    pub config: Config,
    pub store: Arc<dyn Store>,
}

impl Ctx {
    async fn open(config: Config) -> anyhow::Result<Ctx> {
        keys::ensure_private_dir(&config.data_dir)?;
        let url = config.store_url();
        let store = gateway::store::open(&url)
            .await
            .with_context(|| format!("cannot open the store {}", redact_url(&url)))?;
        Ok(Ctx { config, store })
    }

    /// Changes made from the command line go to the audit log too, as done by the operator
    /// (`cli:$USER`).
    pub async fn audit(
        &self,
        action: &str,
        object: &str,
        detail: serde_json::Value,
    ) -> anyhow::Result<()> {
        let actor = std::env::var("USER").unwrap_or_else(|_| "command line".into());
        self.store
            .append_audit(&gateway::store::NewAuditEntry {
                actor: format!("cli:{actor}"),
                action: action.to_string(),
                object: Some(object.to_string()),
                detail,
                client_addr: None,
            })
            .await?;
        Ok(())
    }
}

/// Libraries that log what they are given, where that is people's SQL (with the passwords of
/// `ALTER ROLE ... PASSWORD`): silenced whatever `log.filter` says.
const QUIET_TARGETS: &[&str] = &["sqlparser=off"];

/// Logs go to stderr, so that command output on stdout stays clean for scripts.
fn init_logging(config: &Config) -> anyhow::Result<()> {
    let mut filter = tracing_subscriber::EnvFilter::try_new(&config.log.filter)
        .with_context(|| format!("log.filter '{}' is not a tracing filter", config.log.filter))?;
    for directive in QUIET_TARGETS {
        filter = filter.add_directive(directive.parse().expect("a valid directive"));
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in files or a journal.
        .with_ansi(std::io::stderr().is_terminal());
    // Another subscriber can only exist in tests; keep it then.
    let _ = if config.log.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    Ok(())
}

/// Hides the password of a `postgres://user:password@host/db` URL before it is printed.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn store_passwords_are_not_printed() {
        assert_eq!(
            redact_url("postgres://pgb:s3cret@db:5432/pgb"),
            "postgres://pgb:***@db:5432/pgb"
        );
        assert_eq!(redact_url("postgres://pgb@db/pgb"), "postgres://pgb@db/pgb");
        assert_eq!(
            redact_url("sqlite://./data/pgbastion.db"),
            "sqlite://./data/pgbastion.db"
        );
    }
}
