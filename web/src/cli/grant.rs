//! `pgbastion grant ...`: who may use which database role on which target.

use clap::{ArgGroup, Subcommand};
use gateway::store::{GrantSubject, NewGrant};
use uuid::Uuid;

use super::Ctx;
use super::duration::{format_secs, parse_secs};
use super::output::{print_table, time};
use super::target::{has_upstream_login, missing_login_warning};

#[derive(Debug, Subcommand)]
pub enum GrantCommand {
    /// Let a person or a group use a database role on a target.
    #[command(
        group(ArgGroup::new("subject").required(true).args(["person", "group"])),
        long_about = "Let a person, or everyone in a group, use a database role on a target. \
                      Tokens issued under the grant live at most --max-lifetime.\n\n\
                      Sessions run upstream as the granted role itself, so the gateway must \
                      be able to log in as it: the role is the target's --user, or has a \
                      login added with `pgbastion target login add`. The grant is added \
                      either way, with a warning when the login is missing (sessions are \
                      refused until it is added).\n\nExamples:\n  \
                      pgbastion grant add --target shop --group dev --role app_ro \
                      --max-lifetime 8h\n  \
                      pgbastion grant add --target shop --person alice --role app_rw \
                      --max-lifetime 30m"
    )]
    Add {
        /// Target name.
        #[arg(long)]
        target: String,
        /// Person login.
        #[arg(long)]
        person: Option<String>,
        /// Group name.
        #[arg(long)]
        group: Option<String>,
        /// Database role on the target.
        #[arg(long)]
        role: String,
        /// Longest lifetime of a token under this grant (90s, 30m, 8h, 1d).
        #[arg(long, default_value = "8h", value_parser = parse_secs)]
        max_lifetime: i64,
        /// Credentials requested in the console under this grant wait for a second person's
        /// approval.
        #[arg(long)]
        requires_approval: bool,
    },
    /// List grants, all or those of one target.
    #[command(
        long_about = "List grants, all or those of one target.\n\nExamples:\n  \
                            pgbastion grant list\n  pgbastion grant list --target shop"
    )]
    List {
        /// Only grants on this target.
        #[arg(long)]
        target: Option<String>,
    },
    /// Remove a grant (by the id shown in `grant list`).
    #[command(
        long_about = "Remove a grant by the id shown in `grant list`. Tokens already \
                            issued under it stay valid until they expire or are revoked \
                            (`pgbastion token revoke`).\n\nExample:\n  \
                            pgbastion grant remove 0b6f0c1e-8a52-4a4e-9d0e-1f1f7d1c2a3b"
    )]
    Remove {
        /// Grant id.
        id: Uuid,
    },
}

pub async fn run(cmd: GrantCommand, ctx: &Ctx) -> anyhow::Result<()> {
    match cmd {
        GrantCommand::Add {
            target,
            person,
            group,
            role,
            max_lifetime,
            requires_approval,
        } => {
            let target = find_target(ctx, &target).await?;
            let subject = match (person, group) {
                (Some(login), _) => {
                    if ctx.store.person_by_login(&login).await?.is_none() {
                        anyhow::bail!(
                            "no person '{login}'; add them with `pgbastion person add {login}`"
                        );
                    }
                    GrantSubject::Person(login)
                }
                (None, Some(group)) => GrantSubject::Group(group),
                (None, None) => anyhow::bail!("name a --person or a --group"),
            };
            let grant = ctx
                .store
                .add_grant(&NewGrant {
                    subject,
                    target_id: target.id,
                    db_role: role,
                    max_lifetime_secs: max_lifetime,
                    requires_approval,
                })
                .await?;
            println!(
                "grant {}: {} may use role {} on {} for up to {}",
                grant.id,
                subject_label(&grant.subject),
                grant.db_role,
                grant.target_name,
                format_secs(grant.max_lifetime_secs)
            );
            if grant.requires_approval {
                println!("credentials under it need an approver's approval in the console");
            }
            if !has_upstream_login(ctx, &target, &grant.db_role).await? {
                eprintln!("{}", missing_login_warning(&target.name, &grant.db_role));
            }
        }
        GrantCommand::List { target } => {
            let target_id = match target {
                Some(name) => Some(find_target(ctx, &name).await?.id),
                None => None,
            };
            let rows: Vec<Vec<String>> = ctx
                .store
                .list_grants(target_id)
                .await?
                .into_iter()
                .map(|g| {
                    vec![
                        g.id.to_string(),
                        subject_label(&g.subject),
                        g.target_name,
                        g.db_role,
                        format_secs(g.max_lifetime_secs),
                        if g.requires_approval { "yes" } else { "no" }.to_string(),
                        time(g.created_at),
                    ]
                })
                .collect();
            print_table(
                &[
                    "ID",
                    "WHO",
                    "TARGET",
                    "ROLE",
                    "MAX LIFETIME",
                    "APPROVAL",
                    "CREATED",
                ],
                &rows,
            );
        }
        GrantCommand::Remove { id } => {
            if !ctx.store.remove_grant(id).await? {
                anyhow::bail!("no grant {id}; `pgbastion grant list` shows the grants");
            }
            println!("grant {id} removed");
        }
    }
    Ok(())
}

async fn find_target(ctx: &Ctx, name: &str) -> anyhow::Result<gateway::store::Target> {
    ctx.store.target_by_name(name).await?.ok_or_else(|| {
        anyhow::anyhow!("no target '{name}'; `pgbastion target list` shows the targets")
    })
}

fn subject_label(subject: &GrantSubject) -> String {
    match subject {
        GrantSubject::Person(login) => format!("person {login}"),
        GrantSubject::Group(group) => format!("group {group}"),
    }
}
