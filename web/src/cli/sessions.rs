//! `pgbastion sessions`: who used which target, when, and what their recording holds.

use anyhow::Context as _;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use clap::Args;
use gateway::store::{SessionFilter, SessionPage, SessionStatus, SessionSummary};
use serde::Serialize;
use uuid::Uuid;

use super::Ctx;
use super::duration::{format_secs, parse_secs};
use super::output::{or_dash, print_table, time};

/// The long help of the command (on its variant in `cli::Command`, whose doc comment
/// would otherwise replace it).
pub const LONG_ABOUT: &str = "List gateway sessions, newest first: who, on which target and role, from \
                  where, when and for how long, how it ended, and how many events its \
                  recording holds and whether it is sealed.\n\n\
                  --since and --until take a time (RFC 3339, e.g. 2026-05-01T09:00:00Z) or a \
                  duration meaning that long ago (90s, 30m, 2h, 1d). A status is live (not \
                  ended), terminated (ended by an admin or by revoking its token) or ended (any \
                  other end). When more sessions match than --limit, the last line gives the \
                  --before cursor of the next page.\n\n\
                  Examples:\n  \
                  pgbastion sessions\n  \
                  pgbastion sessions --person alice --since 2h\n  \
                  pgbastion sessions --target shop --status live --json\n  \
                  pgbastion sessions --since 2026-05-01T00:00:00Z --until 1d --limit 100";

#[derive(Debug, Args)]
pub struct SessionsArgs {
    /// Only sessions of this person (login).
    #[arg(long)]
    person: Option<String>,
    /// Only sessions on this target (name).
    #[arg(long)]
    target: Option<String>,
    /// Only sessions started at or after this time (RFC 3339, or a duration ago: 2h).
    #[arg(long, value_name = "WHEN", value_parser = parse_when_now)]
    since: Option<DateTime<Utc>>,
    /// Only sessions started before this time (RFC 3339, or a duration ago: 30m).
    #[arg(long, value_name = "WHEN", value_parser = parse_when_now)]
    until: Option<DateTime<Utc>>,
    /// Only live, ended or terminated sessions.
    #[arg(long, value_parser = ["live", "ended", "terminated"])]
    status: Option<String>,
    /// Sessions per page.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=10_000))]
    limit: i64,
    /// The next page: the cursor printed at the end of the previous one.
    #[arg(long, value_name = "CURSOR", value_parser = parse_cursor)]
    before: Option<Cursor>,
    /// One JSON object: {"sessions": [...], "next_before": CURSOR or null}.
    #[arg(long)]
    json: bool,
}

/// Where a page ends: the last session's start time and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    started_at: DateTime<Utc>,
    id: Uuid,
}

impl std::fmt::Display for Cursor {
    /// `2026-05-01T12:00:00.123456Z,<id>`: microseconds, the precision the store keeps.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = self.started_at.to_rfc3339_opts(SecondsFormat::Micros, true);
        write!(f, "{at},{}", self.id)
    }
}

fn parse_cursor(text: &str) -> Result<Cursor, String> {
    let bad = || {
        format!("'{text}' is not a cursor: use the --before value printed below the previous page")
    };
    let (at, id) = text.split_once(',').ok_or_else(bad)?;
    Ok(Cursor {
        started_at: DateTime::parse_from_rfc3339(at)
            .map_err(|_| bad())?
            .with_timezone(&Utc),
        id: id.parse().map_err(|_| bad())?,
    })
}

fn parse_when_now(text: &str) -> Result<DateTime<Utc>, String> {
    parse_when(text, Utc::now())
}

/// An RFC 3339 time, or a duration before `now`.
fn parse_when(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(at.with_timezone(&Utc));
    }
    let secs = parse_secs(text).map_err(|_| {
        format!(
            "'{text}' is neither a time (RFC 3339: 2026-05-01T09:00:00Z) nor a duration ago \
             (90s, 30m, 2h, 1d)"
        )
    })?;
    Duration::try_seconds(secs)
        .and_then(|ago| now.checked_sub_signed(ago))
        .ok_or_else(|| format!("'{text}' reaches too far back"))
}

#[derive(Serialize)]
struct JsonPage<'a> {
    sessions: &'a [SessionSummary],
    next_before: Option<String>,
}

pub async fn run(args: SessionsArgs, ctx: &Ctx) -> anyhow::Result<()> {
    let status = args
        .status
        .as_deref()
        .map(str::parse::<SessionStatus>)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let filter = SessionFilter {
        person: args.person,
        target: args.target,
        started_after: args.since,
        started_before: args.until,
        status,
        group: None,
    };
    // One more than asked for tells whether there is a next page, without counting.
    let mut sessions = ctx
        .store
        .find_sessions(
            &filter,
            &SessionPage {
                before: args.before.map(|c| (c.started_at, c.id)),
                limit: args.limit + 1,
            },
        )
        .await
        .context("cannot list the sessions")?;
    let more = sessions.len() as i64 > args.limit;
    sessions.truncate(args.limit as usize);
    let next = more.then(|| sessions.last()).flatten().map(|last| Cursor {
        started_at: last.session.started_at,
        id: last.session.id,
    });
    if args.json {
        let page = JsonPage {
            sessions: &sessions,
            next_before: next.map(|c| c.to_string()),
        };
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(());
    }
    print_table(
        &[
            "ID", "PERSON", "TARGET", "ROLE", "CLIENT", "STARTED", "DURATION", "END", "EVENTS",
            "SEALED",
        ],
        &sessions.iter().map(row).collect::<Vec<_>>(),
    );
    if let Some(next) = next {
        println!("more sessions: add --before {next}");
    }
    Ok(())
}

fn row(summary: &SessionSummary) -> Vec<String> {
    let s = &summary.session;
    vec![
        s.id.to_string(),
        s.person_login.clone(),
        s.target_name.clone(),
        s.db_role.clone(),
        s.client_addr.clone(),
        time(s.started_at),
        match s.ended_at {
            Some(ended) => format_secs((ended - s.started_at).num_seconds().max(0)),
            None => "live".to_string(),
        },
        or_dash(s.end_reason.map(|r| r.as_str())),
        summary.event_count.to_string(),
        if summary.sealed { "yes" } else { "no" }.to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use gateway::store::{EndReason, Session};

    fn parse(args: &[&str]) -> Result<SessionsArgs, clap::Error> {
        let cli = Cli::try_parse_from(["pgbastion", "sessions"].iter().chain(args))?;
        match cli.command {
            Command::Sessions(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn times_are_rfc3339_or_a_duration_ago() {
        let now = at("2026-05-01T12:00:00Z");
        assert_eq!(parse_when("2h", now), Ok(at("2026-05-01T10:00:00Z")));
        assert_eq!(parse_when("1h30m", now), Ok(at("2026-05-01T10:30:00Z")));
        assert_eq!(
            parse_when("2026-04-30T08:00:00+02:00", now),
            Ok(at("2026-04-30T06:00:00Z"))
        );
        let err = parse_when("yesterday", now).unwrap_err();
        assert!(err.contains("RFC 3339") && err.contains("2h"), "{err}");
    }

    #[test]
    fn cursor_round_trips_with_microseconds() {
        let cursor = Cursor {
            started_at: at("2026-05-01T12:00:00.000123Z"),
            id: Uuid::new_v4(),
        };
        let text = cursor.to_string();
        assert!(text.starts_with("2026-05-01T12:00:00.000123Z,"), "{text}");
        assert_eq!(parse_cursor(&text), Ok(cursor));
        assert!(parse_cursor("2026-05-01T12:00:00Z").is_err());
        assert!(parse_cursor("nonsense,also").is_err());
    }

    #[test]
    fn filters_parse() {
        let args = parse(&[
            "--person", "alice", "--target", "shop", "--status", "live", "--since", "2h",
            "--limit", "5", "--json",
        ])
        .unwrap();
        assert_eq!(args.person.as_deref(), Some("alice"));
        assert_eq!(args.target.as_deref(), Some("shop"));
        assert_eq!(args.status.as_deref(), Some("live"));
        assert!(args.since.is_some() && args.until.is_none());
        assert_eq!(args.limit, 5);
        assert!(args.json);
        assert!(parse(&["--status", "dead"]).is_err());
        assert!(parse(&["--limit", "0"]).is_err());
    }

    #[test]
    fn rows_show_live_sessions_and_durations() {
        let started = at("2026-05-01T12:00:00Z");
        let mut session = Session {
            id: Uuid::nil(),
            person_login: "alice".into(),
            target_id: Uuid::nil(),
            target_name: "shop".into(),
            db_role: "app_ro".into(),
            credential_id: Uuid::nil(),
            client_addr: "192.0.2.7:5000".into(),
            application_name: None,
            tls_version: None,
            started_at: started,
            ended_at: None,
            end_reason: None,
            end_detail: None,
            bytes_client_to_server: 0,
            bytes_server_to_client: 0,
            recording: gateway::store::RecordingPolicy::Strict,
            groups: Vec::new(),
        };
        let live = SessionSummary {
            session: session.clone(),
            event_count: 3,
            sealed: false,
        };
        assert_eq!(row(&live)[6..], ["live", "-", "3", "no"]);
        session.ended_at = Some(started + Duration::seconds(5400));
        session.end_reason = Some(EndReason::ClientQuit);
        let ended = SessionSummary {
            session,
            event_count: 10,
            sealed: true,
        };
        assert_eq!(row(&ended)[6..], ["1h30m", "client_quit", "10", "yes"]);
    }
}
