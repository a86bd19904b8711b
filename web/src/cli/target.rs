//! `pgbastion target ...`: the databases people reach through the gateway.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use gateway::keys::SecretBox;
use gateway::store::{NewTarget, UpstreamTls};

use super::Ctx;
use super::output::print_table;

#[derive(Debug, Subcommand)]
pub enum TargetCommand {
    /// Add a target database.
    #[command(
        long_about = "Add a target database. NAME is what people type as the database \
                            name at the gateway; the gateway logs in upstream as --user with a \
                            password that is sealed with the data directory's secret key and \
                            never shown again. The password is read from standard input or an \
                            environment variable, never from the command line (where `ps` would \
                            show it).\n\nExamples:\n  \
                            printf '%s' \"$SHOP_PASSWORD\" | pgbastion target add shop \
                            --host db.internal --database shop --user gateway --password-stdin\n  \
                            pgbastion target add billing --host 10.0.0.5 --port 6543 \
                            --database billing --user gw --password-env BILLING_PW \
                            --tls verify-full --ca-file /etc/ssl/billing-ca.pem"
    )]
    Add(AddTarget),
    /// List targets (never shows secrets, only whether one is set).
    #[command(
        long_about = "List targets. Secrets are never shown, only whether one is \
                            set.\n\nExample:\n  pgbastion target list"
    )]
    List,
    /// Remove a target and its grants.
    #[command(
        long_about = "Remove a target and the grants on it. Issued credentials and \
                            recorded sessions stay, as history; tokens for it stop \
                            working.\n\nExample:\n  pgbastion target remove shop"
    )]
    Remove {
        /// Target name.
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct AddTarget {
    /// Name people use as the database name at the gateway.
    name: String,
    /// Upstream server host name or address.
    #[arg(long)]
    host: String,
    /// Upstream server port.
    #[arg(long, default_value_t = 5432)]
    port: u16,
    /// Database name on the upstream server.
    #[arg(long)]
    database: String,
    /// Role the gateway logs in as upstream.
    #[arg(long)]
    user: String,
    /// Read the upstream password from standard input (one line, or everything until EOF).
    #[arg(long, conflicts_with = "password_env")]
    password_stdin: bool,
    /// Read the upstream password from this environment variable.
    #[arg(long, value_name = "VAR")]
    password_env: Option<String>,
    /// How the gateway protects the upstream connection.
    #[arg(long, default_value = "require", value_parser = ["disable", "require", "verify-full"])]
    tls: String,
    /// PEM CA bundle to check the upstream certificate against (with --tls verify-full).
    #[arg(long, value_name = "PATH")]
    ca_file: Option<PathBuf>,
}

pub async fn run(cmd: TargetCommand, ctx: &Ctx) -> anyhow::Result<()> {
    match cmd {
        TargetCommand::Add(args) => add(args, ctx).await,
        TargetCommand::List => {
            let rows: Vec<Vec<String>> = ctx
                .store
                .list_targets()
                .await?
                .into_iter()
                .map(|t| {
                    vec![
                        t.name,
                        format!("{}:{}", t.host, t.port),
                        t.database,
                        t.upstream_user,
                        t.tls_mode.as_str().to_string(),
                        if t.upstream_secret_sealed.is_some() {
                            "set"
                        } else {
                            "none"
                        }
                        .into(),
                        if t.enabled { "yes" } else { "no" }.into(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "NAME", "UPSTREAM", "DATABASE", "USER", "TLS", "SECRET", "ENABLED",
                ],
                &rows,
            );
            Ok(())
        }
        TargetCommand::Remove { name } => {
            if !ctx.store.remove_target(&name).await? {
                anyhow::bail!("no target '{name}'; `pgbastion target list` shows the targets");
            }
            println!("target {name} removed, with its grants");
            Ok(())
        }
    }
}

async fn add(args: AddTarget, ctx: &Ctx) -> anyhow::Result<()> {
    let tls_mode: UpstreamTls = args.tls.parse().map_err(anyhow::Error::msg)?;
    let ca_pem = match &args.ca_file {
        Some(_) if tls_mode != UpstreamTls::VerifyFull => {
            anyhow::bail!("--ca-file is only used with --tls verify-full")
        }
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the CA file {}", path.display()))?,
        ),
        None => None,
    };
    let password = read_password(&args)?;
    let upstream_secret_sealed = match password {
        Some(password) => {
            let secrets = SecretBox::load_or_create(&ctx.config.secret_key_path())?;
            Some(secrets.seal(password.as_bytes()))
        }
        None => None,
    };
    let target = ctx
        .store
        .add_target(&NewTarget {
            name: args.name,
            host: args.host,
            port: args.port,
            database: args.database,
            tls_mode,
            ca_pem,
            upstream_user: args.user,
            upstream_secret_sealed,
        })
        .await?;
    let secret = if target.upstream_secret_sealed.is_some() {
        "password sealed"
    } else {
        "no password"
    };
    println!(
        "target {} added: {}@{}:{}/{} (tls {}, {secret})",
        target.name,
        target.upstream_user,
        target.host,
        target.port,
        target.database,
        target.tls_mode.as_str()
    );
    Ok(())
}

/// The upstream password, from stdin or an environment variable, never from argv.
fn read_password(args: &AddTarget) -> anyhow::Result<Option<String>> {
    let password = if args.password_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the password from standard input")?;
        // `echo secret |` adds a newline that is not part of the password.
        let trimmed = text.strip_suffix('\n').unwrap_or(&text);
        trimmed.strip_suffix('\r').unwrap_or(trimmed).to_string()
    } else if let Some(var) = &args.password_env {
        std::env::var(var)
            .with_context(|| format!("environment variable {var} is not set (or not UTF-8)"))?
    } else {
        return Ok(None);
    };
    if password.is_empty() {
        anyhow::bail!("the upstream password is empty; leave out --password-* for no password");
    }
    Ok(Some(password))
}
