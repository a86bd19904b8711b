//! `pgbastion person ...`: the people who may hold credentials.

use clap::Subcommand;

use super::Ctx;
use super::output::{or_dash, print_table, time};

#[derive(Debug, Subcommand)]
pub enum PersonCommand {
    /// Add a person, or update the name, email and groups of an existing one.
    #[command(
        long_about = "Add a person, or update the name, email and groups of an existing \
                            one. LOGIN is what they type as the Postgres user. Groups replace \
                            the previous ones.\n\nExample:\n  \
                            pgbastion person add alice --name 'Alice Martin' \
                            --email alice@example.com --group dev --group oncall"
    )]
    Add {
        /// Login, used as the Postgres user name at the gateway.
        login: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// Group membership (repeat for several); grants can name a group.
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
    },
    /// List people.
    #[command(long_about = "List people with their groups.\n\nExample:\n  pgbastion person list")]
    List,
}

pub async fn run(cmd: PersonCommand, ctx: &Ctx) -> anyhow::Result<()> {
    match cmd {
        PersonCommand::Add {
            login,
            name,
            email,
            groups,
        } => {
            if login.trim().is_empty() {
                anyhow::bail!("a login cannot be empty");
            }
            let person = ctx
                .store
                .upsert_person(&login, name.as_deref(), email.as_deref(), &groups)
                .await?;
            let groups = if person.groups.is_empty() {
                "no groups".to_string()
            } else {
                format!("groups {}", person.groups.join(", "))
            };
            println!("person {} saved ({groups})", person.login);
        }
        PersonCommand::List => {
            let rows: Vec<Vec<String>> = ctx
                .store
                .list_people()
                .await?
                .into_iter()
                .map(|p| {
                    vec![
                        p.login,
                        or_dash(p.display_name.as_deref()),
                        or_dash(p.email.as_deref()),
                        or_dash(Some(&p.groups.join(","))),
                        time(p.created_at),
                    ]
                })
                .collect();
            print_table(&["LOGIN", "NAME", "EMAIL", "GROUPS", "CREATED"], &rows);
        }
    }
    Ok(())
}
