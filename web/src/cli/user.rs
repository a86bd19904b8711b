//! `pgbastion user ...`: local console accounts (bootstrap and break-glass). Everyone else signs
//! in through the identity provider.

use std::io::Read as _;

use anyhow::Context as _;
use chrono::Utc;
use clap::Subcommand;
use gateway::store::{LocalAccount, StoreError};
use web::console::auth::password;
use web::console::auth::{Role, Roles};

use super::Ctx;
use super::output::{print_table, time};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a local account that signs in to the console with a password.
    #[command(
        long_about = "Add a local console account (and the person, if new). Local \
                            accounts are for bootstrap and break-glass; people normally sign \
                            in through the identity provider. Without --password-stdin a \
                            random password is generated and printed once.\n\nExamples:\n  \
                            pgbastion user add root --admin\n  \
                            printf '%s' \"$PW\" | pgbastion user add alice --role user \
                            --role approver --password-stdin"
    )]
    Add {
        login: String,
        /// Console role (user, approver, auditor, admin); repeat for several.
        #[arg(long = "role", value_name = "ROLE", value_parser = parse_role)]
        roles: Vec<String>,
        /// Shorthand for --role admin.
        #[arg(long)]
        admin: bool,
        /// Read the password from standard input instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password (read from standard input); clears a lock after failed sign-ins.
    #[command(
        long_about = "Set a local account's password, read from standard input, and \
                            clear any lock left by failed sign-ins.\n\nExample:\n  \
                            printf '%s' \"$PW\" | pgbastion user passwd root"
    )]
    Passwd { login: String },
    /// Replace a local account's console roles.
    #[command(
        long_about = "Replace a local account's console roles; its console sessions \
                            end so the new roles apply at once.\n\nExample:\n  \
                            pgbastion user roles alice --role user --role auditor"
    )]
    Roles {
        login: String,
        #[arg(long = "role", value_name = "ROLE", value_parser = parse_role, required = true)]
        roles: Vec<String>,
    },
    /// List local accounts.
    List,
}

fn parse_role(s: &str) -> Result<String, String> {
    Role::parse(s)
        .map(|r| r.as_str().to_string())
        .ok_or_else(|| format!("unknown role '{s}': use user, approver, auditor or admin"))
}

fn read_stdin_password() -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read the password from standard input")?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

pub async fn run(cmd: UserCommand, ctx: &Ctx) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add {
            login,
            mut roles,
            admin,
            password_stdin,
        } => {
            let login = login.trim().to_string();
            if login.is_empty() {
                anyhow::bail!("a login cannot be empty");
            }
            if admin && !roles.iter().any(|r| r == "admin") {
                roles.push("admin".into());
            }
            if roles.is_empty() {
                roles.push("user".into());
            }
            let roles = Roles::from_names(&roles).names();
            let (password, generated) = if password_stdin {
                (read_stdin_password()?, false)
            } else {
                (web::console::auth::session::random_token(), true)
            };
            let hash = password::hash(&password)?;
            let now = Utc::now();
            let account = LocalAccount {
                login: login.clone(),
                password_hash: hash,
                roles: roles.clone(),
                failed_attempts: 0,
                locked_until: None,
                disabled: false,
                created_at: now,
                password_changed_at: now,
            };
            match ctx.store.insert_local_account(&account).await {
                Ok(()) => {}
                Err(StoreError::Duplicate { .. }) => anyhow::bail!(
                    "{login} already has a local account; use `pgbastion user passwd {login}` \
                     or `pgbastion user roles {login}`"
                ),
                Err(e) => return Err(e.into()),
            }
            if ctx.store.person_by_login(&login).await?.is_none() {
                ctx.store.upsert_person(&login, None, None, &[]).await?;
            }
            ctx.audit("user.add", &login, serde_json::json!({ "roles": roles }))
                .await?;
            println!(
                "local account {login} added with roles {}",
                roles.join(", ")
            );
            if generated {
                println!("password (shown once): {password}");
            }
        }
        UserCommand::Passwd { login } => {
            let hash = password::hash(&read_stdin_password()?)?;
            ctx.store.set_local_password(&login, &hash).await?;
            ctx.store
                .end_console_sessions_of(&login, Utc::now())
                .await?;
            ctx.audit("user.passwd", &login, serde_json::json!({}))
                .await?;
            println!("password of {login} changed; its console sessions were ended");
        }
        UserCommand::Roles { login, roles } => {
            let roles = Roles::from_names(&roles).names();
            ctx.store.set_local_roles(&login, &roles).await?;
            ctx.store
                .end_console_sessions_of(&login, Utc::now())
                .await?;
            ctx.audit("user.roles", &login, serde_json::json!({ "roles": roles }))
                .await?;
            println!("{login} now has roles {}", roles.join(", "));
        }
        UserCommand::List => {
            let now = Utc::now();
            let rows: Vec<Vec<String>> = ctx
                .store
                .list_local_accounts()
                .await?
                .into_iter()
                .map(|a| {
                    let state = match a.locked_until {
                        _ if a.disabled => "disabled".to_string(),
                        Some(until) if until > now => format!("locked until {}", time(until)),
                        _ => "ok".to_string(),
                    };
                    vec![a.login, a.roles.join(","), state, time(a.created_at)]
                })
                .collect();
            print_table(&["LOGIN", "ROLES", "STATE", "CREATED"], &rows);
        }
    }
    Ok(())
}
