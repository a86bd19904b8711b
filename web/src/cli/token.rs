//! `pgbastion token ...`: short-lived credentials, issued under a grant.

use chrono::Utc;
use clap::{Subcommand, ValueEnum};
use gateway::credential::{self, CredentialSigner, IssueRequest, Issued};
use uuid::Uuid;

use web::connection::Connection;

use super::Ctx;
use super::duration::{format_secs, parse_secs};
use super::output::{or_dash, print_table, time};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a token for a person, if a grant allows it.
    #[command(
        long_about = "Issue a token that lets a person use a database role on a target \
                            through the gateway. A grant must allow it; the lifetime is capped \
                            by the grant. The token is the Postgres password; it is shown once \
                            and not stored.\n\nExamples:\n  \
                            pgbastion token issue --person alice --target shop --role app_ro \
                            --lifetime 30m --reason 'INC-42'\n  \
                            pgbastion token issue --person alice --target shop --role app_ro \
                            --format json"
    )]
    Issue {
        /// Person login.
        #[arg(long)]
        person: String,
        /// Target name.
        #[arg(long)]
        target: String,
        /// Database role.
        #[arg(long)]
        role: String,
        /// Lifetime (90s, 30m, 8h); default credentials.default_lifetime_secs (1h).
        #[arg(long, value_parser = parse_secs)]
        lifetime: Option<i64>,
        /// Why it is needed (shown to auditors).
        #[arg(long)]
        reason: Option<String>,
        /// text for people, json (one object) for scripts.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Revoke a token; live sessions using it are ended.
    #[command(
        long_about = "Revoke a credential by its id (printed by `token issue` and `token \
                            list`). The gateway refuses it from now on and ends the sessions \
                            using it.\n\nExample:\n  \
                            pgbastion token revoke 0b6f0c1e-8a52-4a4e-9d0e-1f1f7d1c2a3b"
    )]
    Revoke {
        /// Credential id.
        id: Uuid,
    },
    /// List issued credentials, newest first.
    #[command(
        long_about = "List issued credentials (not the tokens, which are never stored), \
                            newest first.\n\nExamples:\n  pgbastion token list\n  \
                            pgbastion token list --person alice"
    )]
    List {
        /// Only this person's credentials.
        #[arg(long)]
        person: Option<String>,
    },
}

pub async fn run(cmd: TokenCommand, ctx: &Ctx) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Issue {
            person,
            target,
            role,
            lifetime,
            reason,
            format,
        } => {
            let c = &ctx.config.credentials;
            let signer = CredentialSigner::load_or_create(
                &ctx.config.signing_key_path(),
                &c.issuer,
                &c.audience,
            )?;
            let req = IssueRequest {
                person_login: person,
                target_name: target,
                db_role: role,
                lifetime_secs: lifetime,
                reason,
                default_lifetime_secs: c.default_lifetime_secs,
            };
            let issued = credential::issue(ctx.store.as_ref(), &signer, req).await?;
            let c = &issued.credential;
            ctx.audit(
                "credential.issue",
                &c.id.to_string(),
                serde_json::json!({
                    "person": c.person_login,
                    "target": c.target_name,
                    "role": c.db_role,
                    "expires_at": c.expires_at,
                    "reason": c.reason,
                    "via": "command line",
                }),
            )
            .await?;
            print_issued(ctx, &issued, format)
        }
        TokenCommand::Revoke { id } => {
            if !ctx.store.revoke_credential(id, Utc::now()).await? {
                anyhow::bail!("no credential {id}; `pgbastion token list` shows them");
            }
            ctx.audit("credential.revoke", &id.to_string(), serde_json::json!({}))
                .await?;
            println!("credential {id} revoked; sessions using it will be ended");
            Ok(())
        }
        TokenCommand::List { person } => {
            let now = Utc::now();
            let rows: Vec<Vec<String>> = ctx
                .store
                .list_credentials(person.as_deref())
                .await?
                .into_iter()
                .map(|c| {
                    let status = match c.revoked_at {
                        Some(at) => format!("revoked {}", time(at)),
                        None if c.expires_at <= now => "expired".into(),
                        None => "active".into(),
                    };
                    vec![
                        c.id.to_string(),
                        c.person_login,
                        c.target_name,
                        c.db_role,
                        time(c.issued_at),
                        time(c.expires_at),
                        status,
                        or_dash(c.reason.as_deref()),
                    ]
                })
                .collect();
            print_table(
                &[
                    "ID", "PERSON", "TARGET", "ROLE", "ISSUED", "EXPIRES", "STATUS", "REASON",
                ],
                &rows,
            );
            Ok(())
        }
    }
}

fn print_issued(ctx: &Ctx, issued: &Issued, format: Format) -> anyhow::Result<()> {
    let cred = &issued.credential;
    let Connection { psql, uri, .. } = Connection::new(&ctx.config, issued);
    match format {
        Format::Json => {
            let out = serde_json::json!({
                "token": issued.token,
                "credential_id": cred.id,
                "person": cred.person_login,
                "target": cred.target_name,
                "role": cred.db_role,
                "issued_at": cred.issued_at,
                "expires_at": cred.expires_at,
                "lifetime_secs": issued.lifetime_secs,
                "capped_by_grant_secs": issued.capped_by_grant,
                "psql": psql,
                "uri": uri,
            });
            println!("{}", serde_json::to_string(&out)?);
        }
        Format::Text => {
            let capped = match issued.capped_by_grant {
                Some(max) => format!(" (capped to {} by the grant)", format_secs(max)),
                None => String::new(),
            };
            println!(
                "Token for {} as role {} on {}, valid {}{capped}, until {}:",
                cred.person_login,
                cred.db_role,
                cred.target_name,
                format_secs(issued.lifetime_secs),
                time(cred.expires_at)
            );
            println!("\n{}\n", issued.token);
            println!("Connect with psql:\n  {psql}\n");
            println!("Or with this libpq URI:\n  {uri}\n");
            println!(
                "Credential id {} (revoke with `pgbastion token revoke {}`)",
                cred.id, cred.id
            );
        }
    }
    Ok(())
}
