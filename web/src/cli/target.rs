//! `pgbastion target ...`: the databases people reach through the gateway.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context as _;
use chrono::Utc;
use clap::{ArgGroup, Args, Subcommand};
use gateway::keys::SecretBox;
use gateway::store::retention::MAX_RETENTION_DAYS;
use gateway::store::{NewTarget, RecordingPolicy, Target, TargetLogin, UpstreamTls};

use super::Ctx;
use super::output::{print_table, time};

/// What the recording policies mean, for the help of `target add` and `target recording`.
macro_rules! recording_policies_help {
    () => {
        "Recording policies: strict (the default) does not forward a client message until its \
         events are durably stored, so while the store is unreachable statements are refused; \
         buffered forwards first and records asynchronously through a bounded buffer, and ends \
         the session rather than drop events when the buffer cannot drain; off keeps session \
         metadata only (who, when, from where, how it ended) and records no statements, and \
         `pgbastion verify --all` reports such sessions as unrecorded. The row caps bound what \
         is kept of each statement's result: rows, and bytes of row values (0 keeps none); \
         without them the gateway's configured defaults apply."
    };
}

#[derive(Debug, Subcommand)]
pub enum TargetCommand {
    /// Add a target database.
    #[command(
        long_about = concat!(
            "Add a target database. NAME is what people type as the database \
                            name at the gateway.\n\n\
                            Sessions run upstream as the role they were granted: the gateway \
                            logs in as that role itself, so a session cannot switch to another \
                            role. --user is the target's default login, used by sessions granted \
                            that role; every other role granted on the target needs its own \
                            login (`pgbastion target login add`). The --user password is sealed with \
                            the data directory's secret key and never shown again. It is read \
                            from standard input or an environment variable, never from the \
                            command line (where `ps` would show it); without one the gateway \
                            logs in without a password (trust or certificate \
                            authentication).\n\n",
            recording_policies_help!(),
            "\n\nExamples:\n  \
                            printf '%s' \"$SHOP_RO_PASSWORD\" | pgbastion target add shop \
                            --host db.internal --database shop --user shop_ro --password-stdin\n  \
                            pgbastion target add billing --host 10.0.0.5 --port 6543 \
                            --database billing --user billing_ro --password-env BILLING_RO_PW \
                            --tls verify-full --ca-file /etc/ssl/billing-ca.pem\n  \
                            pgbastion target add reports --host 10.0.0.9 --database reports \
                            --user reports_ro --password-stdin --recording buffered \
                            --record-rows 20 --record-bytes 16384"
        )
    )]
    Add(AddTarget),
    /// List targets (never shows secrets, only whether one is set).
    #[command(
        long_about = "List targets with their recording policy (and row caps when they \
                            differ from the gateway's defaults). Secrets are never shown, only \
                            whether one is set.\n\nExample:\n  pgbastion target list"
    )]
    List,
    /// Change how a target's sessions are recorded.
    #[command(
        long_about = concat!(
            "Change how a target's sessions are recorded: the policy, and what is kept of \
             each statement's result. Sessions that start from now on use it; live sessions \
             keep the policy they started with. --rows and --bytes left out keep their \
             current value; `default` returns to the gateway's configured default.\n\n",
            recording_policies_help!(),
            "\n\nExamples:\n  \
             pgbastion target recording shop --policy buffered\n  \
             pgbastion target recording shop --policy strict --rows 0 --bytes 0\n  \
             pgbastion target recording scratch --policy off\n  \
             pgbastion target recording shop --policy strict --rows default --bytes default"
        )
    )]
    Recording(SetRecording),
    /// Keep a target's ended sessions for N days, or forever.
    #[command(
        long_about = "Keep a target's ended sessions, with their recordings and statement \
                      index, for N days after they end, or forever (the default). The \
                      retention job of `pgbastion serve` (every recording.retention_interval_secs) \
                      deletes older ones and writes each deletion to the audit log; live sessions \
                      are never deleted.\n\nExamples:\n  \
                      pgbastion target retention shop --days 90\n  \
                      pgbastion target retention shop --keep-forever"
    )]
    Retention(SetRetention),
    /// Remove a target, its grants and its upstream logins.
    #[command(
        long_about = "Remove a target, the grants on it and its upstream logins. Issued \
                            credentials and recorded sessions stay, as history; tokens for it \
                            stop working.\n\nExample:\n  pgbastion target remove shop"
    )]
    Remove {
        /// Target name.
        name: String,
    },
    /// Add, list and remove the upstream logins of the roles granted on a target.
    #[command(
        subcommand,
        long_about = "Add, list and remove a target's upstream logins: the PostgreSQL roles \
                      the gateway logs in as, one per role granted on the target.\n\n\
                      A session runs upstream as the role its person was granted: the \
                      gateway logs in as that role itself, with a password people never \
                      see. It cannot leave that role with SET ROLE or RESET ROLE, because \
                      it is that role, not a shared login that switched. So every grantable \
                      role must be a LOGIN role on the server (pg_hba.conf must let it in), \
                      and pgbastion needs its password. The target's --user (from `target \
                      add`) is its default login and needs no entry here. A login role can \
                      still SET ROLE to the roles it is a member of: give it only the \
                      memberships its grant should allow.\n\nExamples:\n  \
                      printf '%s' \"$SHOP_RW_PASSWORD\" | pgbastion target login add shop \
                      shop_rw --password-stdin\n  \
                      pgbastion target login list shop\n  \
                      pgbastion target login remove shop shop_rw"
    )]
    Login(LoginCommand),
}

#[derive(Debug, Subcommand)]
pub enum LoginCommand {
    /// Add (or replace) the upstream login of a role granted on a target.
    #[command(
        long_about = "Add the upstream login the gateway uses for sessions granted ROLE on \
                      TARGET, or replace its password.\n\n\
                      Sessions run upstream as the granted role itself (the gateway logs in \
                      as ROLE), so that a session cannot switch to another role: ROLE must be \
                      a LOGIN role on the target's server, reachable with the target's TLS \
                      setting. Its password is sealed with the data directory's secret key and \
                      never shown again. It is read from standard input or an environment \
                      variable, never from the command line (where `ps` would show it); \
                      without one the gateway logs in as ROLE without a password (trust or \
                      certificate authentication). The target's own --user is its default \
                      login and is not added here.\n\nExamples:\n  \
                      printf '%s' \"$SHOP_RW_PASSWORD\" | pgbastion target login add shop \
                      shop_rw --password-stdin\n  \
                      pgbastion target login add billing billing_rw --password-env \
                      BILLING_RW_PW"
    )]
    Add(AddLogin),
    /// List a target's upstream logins (never shows secrets, only whether one is set).
    #[command(
        long_about = "List the roles the gateway can log in as on a target: its default \
                      login (--user of `target add`) and those added with `target login \
                      add`. Secrets are never shown, only whether one is set. Roles granted \
                      on the target without a login are named in a warning: their sessions \
                      are refused.\n\nExample:\n  pgbastion target login list shop"
    )]
    List {
        /// Target name.
        target: String,
    },
    /// Remove the upstream login of a role; sessions granted it are refused from then on.
    #[command(
        long_about = "Remove the upstream login of ROLE on TARGET. New sessions granted \
                      ROLE on TARGET are refused until a login is added again; grants and \
                      live sessions stay (revoke tokens with `pgbastion token revoke`). The \
                      target's default login (--user) cannot be removed.\n\nExample:\n  \
                      pgbastion target login remove shop shop_rw"
    )]
    Remove {
        /// Target name.
        target: String,
        /// Database role.
        role: String,
    },
}

#[derive(Debug, Args)]
pub struct AddLogin {
    /// Target name.
    target: String,
    /// Database role: a LOGIN role on the target's server, used as the upstream user name.
    role: String,
    #[command(flatten)]
    password: PasswordArgs,
}

/// Where an upstream password comes from: never from argv.
#[derive(Debug, Args)]
struct PasswordArgs {
    /// Read the upstream password from standard input (one line, or everything until EOF).
    #[arg(long, conflicts_with = "password_env")]
    password_stdin: bool,
    /// Read the upstream password from this environment variable.
    #[arg(long, value_name = "VAR")]
    password_env: Option<String>,
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
    /// The target's default login: the role sessions granted this role log in as upstream.
    #[arg(long)]
    user: String,
    #[command(flatten)]
    password: PasswordArgs,
    /// How the gateway protects the upstream connection.
    #[arg(long, default_value = "require", value_parser = ["disable", "require", "verify-full"])]
    tls: String,
    /// PEM CA bundle to check the upstream certificate against (with --tls verify-full).
    #[arg(long, value_name = "PATH")]
    ca_file: Option<PathBuf>,
    /// How the target's sessions are recorded (see above).
    #[arg(long, default_value = "strict", value_parser = ["strict", "buffered", "off"])]
    recording: String,
    /// Rows kept per statement (0: none); default: the gateway's configuration.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(0..))]
    record_rows: Option<i64>,
    /// Bytes of row values kept per statement (0: none); default: the gateway's configuration.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(0..))]
    record_bytes: Option<i64>,
}

#[derive(Debug, Args)]
pub struct SetRecording {
    /// Target name.
    name: String,
    /// How the target's sessions are recorded.
    #[arg(long, value_parser = ["strict", "buffered", "off"])]
    policy: String,
    /// Rows kept per statement: a number (0: none) or `default`; left out: unchanged.
    #[arg(long, value_name = "N|default", value_parser = parse_cap)]
    rows: Option<Cap>,
    /// Bytes of row values kept per statement: a number (0: none) or `default`; left out:
    /// unchanged.
    #[arg(long, value_name = "N|default", value_parser = parse_cap)]
    bytes: Option<Cap>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("keep").required(true).args(["days", "keep_forever"])))]
pub struct SetRetention {
    /// Target name.
    name: String,
    /// Days a session is kept after it ended.
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_RETENTION_DAYS)))]
    days: Option<u32>,
    /// Keep the target's sessions forever.
    #[arg(long)]
    keep_forever: bool,
}

/// A target's retention as the CLI shows it.
fn retention_text(days: Option<u32>) -> String {
    match days {
        Some(1) => "1 day".to_string(),
        Some(n) => format!("{n} days"),
        None => "forever".to_string(),
    }
}

/// A recording cap as given to `target recording`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cap {
    /// The gateway's configured default.
    Default,
    Limit(i64),
}

impl Cap {
    fn stored(self) -> Option<i64> {
        match self {
            Cap::Default => None,
            Cap::Limit(n) => Some(n),
        }
    }
}

fn parse_cap(text: &str) -> Result<Cap, String> {
    if text == "default" {
        return Ok(Cap::Default);
    }
    match text.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(Cap::Limit(n)),
        _ => Err(format!(
            "'{text}' is not a cap: give a number (0 keeps none) or `default`"
        )),
    }
}

/// The RECORDING column of `target list`: the policy, and the caps the target sets itself.
fn recording_summary(target: &Target) -> String {
    let caps: Vec<String> = [
        ("rows", target.record_max_rows),
        ("bytes", target.record_max_result_bytes),
    ]
    .into_iter()
    .filter_map(|(name, cap)| cap.map(|n| format!("{name} {n}")))
    .collect();
    if caps.is_empty() {
        target.recording.as_str().to_string()
    } else {
        format!("{} ({})", target.recording.as_str(), caps.join(", "))
    }
}

/// A cap as the CLI reports it.
fn cap_text(cap: Option<i64>) -> String {
    match cap {
        Some(n) => n.to_string(),
        None => "the gateway's default".to_string(),
    }
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
                    let recording = recording_summary(&t);
                    let retention = retention_text(t.retention_days);
                    vec![
                        t.name,
                        format!("{}:{}", t.host, t.port),
                        t.database,
                        t.upstream_user,
                        t.tls_mode.as_str().to_string(),
                        recording,
                        retention,
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
                    "NAME",
                    "UPSTREAM",
                    "DATABASE",
                    "USER",
                    "TLS",
                    "RECORDING",
                    "KEPT",
                    "SECRET",
                    "ENABLED",
                ],
                &rows,
            );
            Ok(())
        }
        TargetCommand::Remove { name } => {
            if !ctx.store.remove_target(&name).await? {
                anyhow::bail!("no target '{name}'; `pgbastion target list` shows the targets");
            }
            println!("target {name} removed, with its grants and upstream logins");
            Ok(())
        }
        TargetCommand::Login(cmd) => login(cmd, ctx).await,
        TargetCommand::Recording(args) => set_recording(args, ctx).await,
        TargetCommand::Retention(args) => set_retention(args, ctx).await,
    }
}

async fn set_retention(args: SetRetention, ctx: &Ctx) -> anyhow::Result<()> {
    // clap makes sure exactly one of --days and --keep-forever is given.
    let days = if args.keep_forever { None } else { args.days };
    let before = find_target(ctx, &args.name).await?;
    let target = ctx
        .store
        .set_target_retention(&args.name, days)
        .await
        .map_err(|e| missing_target(e, &args.name))?;
    ctx.audit(
        "target.retention",
        &target.name,
        serde_json::json!({ "days": target.retention_days, "was": before.retention_days }),
    )
    .await?;
    match target.retention_days {
        Some(days) => println!(
            "target {}: ended sessions are kept {} and then deleted with their recordings by \
             the retention job of `pgbastion serve`",
            target.name,
            retention_text(Some(days))
        ),
        None => println!("target {}: sessions are kept forever", target.name),
    }
    Ok(())
}

async fn set_recording(args: SetRecording, ctx: &Ctx) -> anyhow::Result<()> {
    let policy: RecordingPolicy = args.policy.parse().map_err(anyhow::Error::msg)?;
    let current = find_target(ctx, &args.name).await?;
    let rows = args.rows.map_or(current.record_max_rows, Cap::stored);
    let bytes = args
        .bytes
        .map_or(current.record_max_result_bytes, Cap::stored);
    let target = ctx
        .store
        .set_target_recording(&args.name, policy, rows, bytes)
        .await
        .map_err(|e| missing_target(e, &args.name))?;
    println!(
        "target {}: recording {}, rows kept per statement: {}, result bytes kept per \
         statement: {} (for sessions starting from now on)",
        target.name,
        target.recording.as_str(),
        cap_text(target.record_max_rows),
        cap_text(target.record_max_result_bytes)
    );
    warn_if_unrecorded(&target);
    Ok(())
}

/// Says plainly that a target's sessions will not be recorded.
fn warn_if_unrecorded(target: &Target) {
    if target.recording == RecordingPolicy::Off {
        eprintln!(
            "warning: statements on target {} are not recorded; `pgbastion verify --all` \
             reports its sessions as unrecorded",
            target.name
        );
    }
}

async fn add(args: AddTarget, ctx: &Ctx) -> anyhow::Result<()> {
    let name = web::validate::target_name(&args.name).map_err(anyhow::Error::msg)?;
    let host = web::validate::host(&args.host).map_err(anyhow::Error::msg)?;
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
    let recording: RecordingPolicy = args.recording.parse().map_err(anyhow::Error::msg)?;
    let upstream_secret_sealed = sealed_password(&args.password, ctx)?;
    let target = ctx
        .store
        .add_target(&NewTarget {
            name,
            host,
            port: args.port,
            database: args.database,
            tls_mode,
            ca_pem,
            upstream_user: args.user,
            upstream_secret_sealed,
            recording,
            record_max_rows: args.record_rows,
            record_max_result_bytes: args.record_bytes,
        })
        .await?;
    let secret = if target.upstream_secret_sealed.is_some() {
        "password sealed"
    } else {
        "no password"
    };
    println!(
        "target {} added: {}@{}:{}/{} (tls {}, {secret}, recording {})",
        target.name,
        target.upstream_user,
        target.host,
        target.port,
        target.database,
        target.tls_mode.as_str(),
        recording_summary(&target)
    );
    warn_if_unrecorded(&target);
    Ok(())
}

async fn login(cmd: LoginCommand, ctx: &Ctx) -> anyhow::Result<()> {
    match cmd {
        LoginCommand::Add(args) => {
            let target = find_target(ctx, &args.target).await?;
            if args.role.is_empty() {
                anyhow::bail!("the role name is empty");
            }
            if args.role == target.upstream_user {
                anyhow::bail!(
                    "{} is the default login of target {} (its --user): sessions granted it \
                     already log in with the target's own password",
                    args.role,
                    target.name
                );
            }
            let secret_sealed = sealed_password(&args.password, ctx)?;
            let replaced = ctx
                .store
                .target_login(target.id, &args.role)
                .await?
                .is_some();
            let secret = if secret_sealed.is_some() {
                "password sealed"
            } else {
                "no password"
            };
            ctx.store
                .set_target_login(&TargetLogin {
                    target_id: target.id,
                    role: args.role.clone(),
                    secret_sealed,
                    created_at: Utc::now(),
                })
                .await
                .map_err(|e| missing_target(e, &target.name))?;
            let done = if replaced { "replaced" } else { "added" };
            println!(
                "upstream login {role} on target {} {done} ({secret}): sessions granted {role} \
                 log in upstream as {role}",
                target.name,
                role = args.role,
            );
            Ok(())
        }
        LoginCommand::List { target } => {
            let target = find_target(ctx, &target).await?;
            let logins = ctx.store.list_target_logins(target.id).await?;
            print_table(
                &["ROLE", "LOGIN", "SECRET", "SET AT"],
                &login_rows(&target, &logins),
            );
            let granted: Vec<String> = ctx
                .store
                .list_grants(Some(target.id))
                .await?
                .into_iter()
                .map(|g| g.db_role)
                .collect();
            for role in roles_without_login(&target, &logins, &granted) {
                eprintln!("{}", missing_login_warning(&target.name, &role));
            }
            Ok(())
        }
        LoginCommand::Remove { target, role } => {
            let target = find_target(ctx, &target).await?;
            if role == target.upstream_user {
                anyhow::bail!(
                    "{role} is the default login of target {} (its --user) and cannot be \
                     removed; remove the target instead",
                    target.name
                );
            }
            if !ctx.store.remove_target_login(target.id, &role).await? {
                anyhow::bail!(
                    "target {} has no upstream login for role {role}; `pgbastion target login \
                     list {}` shows them",
                    target.name,
                    target.name
                );
            }
            println!("upstream login {role} removed from target {}", target.name);
            let grants = ctx
                .store
                .list_grants(Some(target.id))
                .await?
                .into_iter()
                .filter(|g| g.db_role == role)
                .count();
            if grants > 0 {
                eprintln!(
                    "warning: {grants} grant(s) on target {} still name role {role}; their new \
                     sessions will be refused until a login is added again",
                    target.name
                );
            }
            Ok(())
        }
    }
}

/// The rows of `target login list`: the default login first, then the added ones by role.
fn login_rows(target: &Target, logins: &[TargetLogin]) -> Vec<Vec<String>> {
    let set_or_none = |sealed: bool| if sealed { "set" } else { "none" }.to_string();
    let default = vec![
        target.upstream_user.clone(),
        "default (--user)".to_string(),
        set_or_none(target.upstream_secret_sealed.is_some()),
        time(target.created_at),
    ];
    let added = logins.iter().map(|l| {
        vec![
            l.role.clone(),
            "role login".to_string(),
            set_or_none(l.secret_sealed.is_some()),
            time(l.created_at),
        ]
    });
    std::iter::once(default).chain(added).collect()
}

/// Roles in `granted` the gateway cannot log in as on `target`, sorted, each once.
fn roles_without_login(target: &Target, logins: &[TargetLogin], granted: &[String]) -> Vec<String> {
    let mut missing: Vec<String> = granted
        .iter()
        .filter(|role| **role != target.upstream_user && !logins.iter().any(|l| l.role == **role))
        .cloned()
        .collect();
    missing.sort();
    missing.dedup();
    missing
}

/// Whether sessions granted `role` on `target` have an upstream login to use.
pub(super) async fn has_upstream_login(
    ctx: &Ctx,
    target: &Target,
    role: &str,
) -> anyhow::Result<bool> {
    Ok(role == target.upstream_user || ctx.store.target_login(target.id, role).await?.is_some())
}

/// The warning for a role granted on a target that has no upstream login for it.
pub(super) fn missing_login_warning(target: &str, role: &str) -> String {
    format!(
        "warning: target {target} has no upstream login for role {role} yet; sessions will be \
         refused until an admin runs `pgbastion target login add {} {} --password-stdin`",
        shell_word(target),
        shell_word(role)
    )
}

/// `word` as one shell word: as is when it is plain, else in single quotes.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '@' | ':'));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

async fn find_target(ctx: &Ctx, name: &str) -> anyhow::Result<Target> {
    ctx.store.target_by_name(name).await?.ok_or_else(|| {
        anyhow::anyhow!("no target '{name}'; `pgbastion target list` shows the targets")
    })
}

/// The target was removed between the look-up and the write.
fn missing_target(err: gateway::store::StoreError, name: &str) -> anyhow::Error {
    match err {
        gateway::store::StoreError::NotFound { what: "target", .. } => {
            anyhow::anyhow!("target '{name}' was removed meanwhile")
        }
        other => other.into(),
    }
}

/// The password named by `args`, sealed with the data directory's secret key; `None` when no
/// password was asked for.
fn sealed_password(args: &PasswordArgs, ctx: &Ctx) -> anyhow::Result<Option<Vec<u8>>> {
    let password = read_password(args, &mut std::io::stdin(), |var| std::env::var(var))?;
    Ok(match password {
        Some(password) => {
            let secrets = SecretBox::load_or_create(&ctx.config.secret_key_path())?;
            Some(secrets.seal(password.as_bytes()))
        }
        None => None,
    })
}

/// The upstream password, from stdin or an environment variable, never from argv.
fn read_password(
    args: &PasswordArgs,
    stdin: &mut dyn Read,
    env: impl Fn(&str) -> Result<String, std::env::VarError>,
) -> anyhow::Result<Option<String>> {
    let password = if args.password_stdin {
        let mut text = String::new();
        stdin
            .read_to_string(&mut text)
            .context("cannot read the password from standard input")?;
        // `echo secret |` adds a newline that is not part of the password.
        let trimmed = text.strip_suffix('\n').unwrap_or(&text);
        trimmed.strip_suffix('\r').unwrap_or(trimmed).to_string()
    } else if let Some(var) = &args.password_env {
        env(var).with_context(|| format!("environment variable {var} is not set (or not UTF-8)"))?
    } else {
        return Ok(None);
    };
    if password.is_empty() {
        anyhow::bail!("the upstream password is empty; leave out --password-* for no password");
    }
    Ok(Some(password))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use uuid::Uuid;

    fn shop() -> Target {
        Target {
            id: Uuid::new_v4(),
            name: "shop".into(),
            host: "db.internal".into(),
            port: 5432,
            database: "shop".into(),
            tls_mode: UpstreamTls::Require,
            ca_pem: None,
            upstream_user: "shop_ro".into(),
            upstream_secret_sealed: Some(b"sealed-default".to_vec()),
            recording: RecordingPolicy::Strict,
            record_max_rows: None,
            record_max_result_bytes: None,
            retention_days: None,
            enabled: true,
            created_at: Utc::now(),
        }
    }

    fn login(target: &Target, role: &str, secret: Option<&[u8]>) -> TargetLogin {
        TargetLogin {
            target_id: target.id,
            role: role.into(),
            secret_sealed: secret.map(<[u8]>::to_vec),
            created_at: Utc::now(),
        }
    }

    fn passwords(stdin: bool, env: Option<&str>) -> PasswordArgs {
        PasswordArgs {
            password_stdin: stdin,
            password_env: env.map(String::from),
        }
    }

    fn no_env(_: &str) -> Result<String, std::env::VarError> {
        Err(std::env::VarError::NotPresent)
    }

    fn parse(args: &[&str]) -> Result<LoginCommand, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("pgbastion").chain(args.iter().copied()))?;
        match cli.command {
            Command::Target(TargetCommand::Login(cmd)) => Ok(cmd),
            other => panic!("parsed as {other:?}"),
        }
    }

    fn parse_retention(args: &[&str]) -> Result<SetRetention, clap::Error> {
        let all = ["pgbastion", "target", "retention"];
        let cli = Cli::try_parse_from(all.iter().chain(args.iter()).copied())?;
        match cli.command {
            Command::Target(TargetCommand::Retention(args)) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn retention_takes_days_or_keep_forever_but_not_both_nor_neither() {
        let args = parse_retention(&["shop", "--days", "90"]).unwrap();
        assert_eq!((args.name.as_str(), args.days), ("shop", Some(90)));
        assert!(
            parse_retention(&["shop", "--keep-forever"])
                .unwrap()
                .keep_forever
        );
        for bad in [
            &["shop"][..],
            &["shop", "--days", "90", "--keep-forever"],
            &["shop", "--days", "0"],
            &["shop", "--days", "-3"],
            &["shop", "--days", "36501"],
        ] {
            assert!(parse_retention(bad).is_err(), "{bad:?}");
        }
        assert_eq!(retention_text(None), "forever");
        assert_eq!(retention_text(Some(1)), "1 day");
        assert_eq!(retention_text(Some(30)), "30 days");
    }

    #[test]
    fn login_add_takes_target_role_and_a_password_source() {
        let LoginCommand::Add(args) = parse(&[
            "target",
            "login",
            "add",
            "shop",
            "shop_rw",
            "--password-stdin",
        ])
        .unwrap() else {
            panic!("not login add");
        };
        assert_eq!(
            (args.target.as_str(), args.role.as_str()),
            ("shop", "shop_rw")
        );
        assert!(args.password.password_stdin);
        assert_eq!(args.password.password_env, None);
    }

    #[test]
    fn login_add_refuses_two_password_sources() {
        let err = parse(&[
            "target",
            "login",
            "add",
            "shop",
            "shop_rw",
            "--password-stdin",
            "--password-env",
            "PW",
        ])
        .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn login_add_never_takes_the_password_as_an_argument() {
        assert!(parse(&["target", "login", "add", "shop", "shop_rw", "s3cret"]).is_err());
        assert!(
            parse(&[
                "target",
                "login",
                "add",
                "shop",
                "shop_rw",
                "--password",
                "x"
            ])
            .is_err()
        );
    }

    #[test]
    fn login_list_and_remove_parse() {
        assert!(matches!(
            parse(&["target", "login", "list", "shop"]).unwrap(),
            LoginCommand::List { target } if target == "shop"
        ));
        assert!(matches!(
            parse(&["target", "login", "remove", "shop", "shop_rw"]).unwrap(),
            LoginCommand::Remove { target, role } if target == "shop" && role == "shop_rw"
        ));
    }

    #[test]
    fn password_from_stdin_loses_only_its_line_ending() {
        let read = |input: &str| {
            read_password(&passwords(true, None), &mut input.as_bytes(), no_env).unwrap()
        };
        assert_eq!(read("s3cret\n").as_deref(), Some("s3cret"));
        assert_eq!(read("s3cret\r\n").as_deref(), Some("s3cret"));
        assert_eq!(read("s3cret").as_deref(), Some("s3cret"));
        assert_eq!(read(" two words \n\n").as_deref(), Some(" two words \n"));
    }

    #[test]
    fn password_from_the_environment_names_a_missing_variable() {
        let env = |var: &str| match var {
            "PW" => Ok("from-env".to_string()),
            _ => Err(std::env::VarError::NotPresent),
        };
        let got = read_password(&passwords(false, Some("PW")), &mut "".as_bytes(), env).unwrap();
        assert_eq!(got.as_deref(), Some("from-env"));
        let err = read_password(&passwords(false, Some("NOPE")), &mut "".as_bytes(), env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("NOPE"), "{err}");
    }

    #[test]
    fn empty_password_is_refused_and_no_source_means_no_password() {
        assert!(read_password(&passwords(true, None), &mut "\n".as_bytes(), no_env).is_err());
        let none = read_password(&passwords(false, None), &mut "ignored".as_bytes(), no_env);
        assert_eq!(none.unwrap(), None);
    }

    #[test]
    fn login_list_shows_the_default_login_first_and_never_a_secret() {
        let target = shop();
        let logins = [
            login(&target, "shop_admin", None),
            login(&target, "shop_rw", Some(b"sealed-rw")),
        ];
        let rows = login_rows(&target, &logins);
        let cells: Vec<[&str; 3]> = rows
            .iter()
            .map(|r| [r[0].as_str(), r[1].as_str(), r[2].as_str()])
            .collect();
        assert_eq!(
            cells,
            [
                ["shop_ro", "default (--user)", "set"],
                ["shop_admin", "role login", "none"],
                ["shop_rw", "role login", "set"],
            ]
        );
        let printed = format!("{rows:?}");
        assert!(!printed.contains("sealed"), "{printed}");
    }

    #[test]
    fn granted_roles_without_a_login_are_found_once_each() {
        let target = shop();
        let logins = [login(&target, "shop_rw", Some(b"s"))];
        let granted: Vec<String> = ["shop_ro", "shop_rw", "shop_admin", "audit", "shop_admin"]
            .map(String::from)
            .into();
        assert_eq!(
            roles_without_login(&target, &logins, &granted),
            ["audit", "shop_admin"]
        );
        assert!(roles_without_login(&target, &logins, &[]).is_empty());
    }

    #[test]
    fn missing_login_warning_names_the_command_that_fixes_it() {
        assert_eq!(
            missing_login_warning("shop", "shop_ro"),
            "warning: target shop has no upstream login for role shop_ro yet; sessions will be \
             refused until an admin runs `pgbastion target login add shop shop_ro \
             --password-stdin`"
        );
        assert!(
            missing_login_warning("shop", "Ops Team")
                .contains("`pgbastion target login add shop 'Ops Team' --password-stdin`")
        );
    }

    fn parse_target(args: &[&str]) -> Result<TargetCommand, clap::Error> {
        let cli = Cli::try_parse_from(["pgbastion", "target"].iter().chain(args))?;
        match cli.command {
            Command::Target(cmd) => Ok(cmd),
            other => panic!("parsed as {other:?}"),
        }
    }

    const ADD: [&str; 8] = [
        "add",
        "shop",
        "--host",
        "db",
        "--database",
        "shop",
        "--user",
        "shop_ro",
    ];

    #[test]
    fn target_add_records_strictly_unless_told_otherwise() {
        let TargetCommand::Add(args) = parse_target(&ADD).unwrap() else {
            panic!("not target add");
        };
        assert_eq!(args.recording, "strict");
        assert_eq!((args.record_rows, args.record_bytes), (None, None));
        let with: Vec<&str> = ADD
            .iter()
            .copied()
            .chain(["--recording", "buffered", "--record-rows", "0"])
            .chain(["--record-bytes", "16384"])
            .collect();
        let TargetCommand::Add(args) = parse_target(&with).unwrap() else {
            panic!("not target add");
        };
        assert_eq!(args.recording, "buffered");
        assert_eq!(
            (args.record_rows, args.record_bytes),
            (Some(0), Some(16384))
        );
    }

    #[test]
    fn target_add_refuses_unknown_policies_and_negative_caps() {
        for extra in [
            ["--recording", "sometimes"],
            ["--record-rows", "-1"],
            ["--record-bytes", "lots"],
        ] {
            let args: Vec<&str> = ADD.iter().copied().chain(extra).collect();
            assert!(parse_target(&args).is_err(), "{extra:?}");
        }
    }

    #[test]
    fn target_recording_takes_a_policy_and_optional_caps() {
        let TargetCommand::Recording(args) =
            parse_target(&["recording", "shop", "--policy", "off", "--rows", "default"]).unwrap()
        else {
            panic!("not target recording");
        };
        assert_eq!((args.name.as_str(), args.policy.as_str()), ("shop", "off"));
        assert_eq!((args.rows, args.bytes), (Some(Cap::Default), None));
        assert!(parse_target(&["recording", "shop"]).is_err());
        assert!(parse_target(&["recording", "shop", "--policy", "off", "--bytes", "-5"]).is_err());
        assert_eq!(parse_cap("42"), Ok(Cap::Limit(42)));
    }

    #[test]
    fn target_list_shows_the_policy_and_the_caps_set() {
        let mut target = shop();
        assert_eq!(recording_summary(&target), "strict");
        target.recording = RecordingPolicy::Buffered;
        target.record_max_rows = Some(0);
        assert_eq!(recording_summary(&target), "buffered (rows 0)");
        target.record_max_result_bytes = Some(4096);
        assert_eq!(recording_summary(&target), "buffered (rows 0, bytes 4096)");
    }

    #[test]
    fn odd_names_are_quoted_for_the_shell() {
        assert_eq!(shell_word("shop_rw"), "shop_rw");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word("$(rm)"), "'$(rm)'");
        assert_eq!(shell_word(""), "''");
    }
}
