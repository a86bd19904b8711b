//! Proof of completeness: every statement the server executed appears in the recording, in
//! order, under the person's identity, with the same parameter values.
//!
//! The oracle is the server's own log (`log_statement = 'all'`, parsed by
//! `harness::serverlog`). After each workload every gateway session's recording is compared with
//! the statements its server backend logged:
//!
//! - a simple-protocol `query` event with a `statement:` line (the whole query string: the server
//!   logs a multi-statement query once, and so does the recording);
//! - an extended-protocol `execute` event (its statement name, portal and SQL text, and the
//!   values of the `bind` that made its portal) with an `execute` line and its `DETAIL:
//!   parameters:`.
//!
//! `log_line_prefix` cannot show the custom settings `pgbastion.*` (its escapes are fixed), so a
//! recording is tied to a backend by what both say ran (and the application name); one
//! workload also asks the server for `pg_backend_pid()` and `pgbastion.session_id` and checks
//! that this pairing is the one the server reports. Every backend of the gateway's role must be
//! paired, and every recording: nothing ran unrecorded, nothing recorded did not run.
//!
//! Values are compared as text. The server prints every parameter with its type's output
//! function; the recording keeps text parameters as sent and decodes binary ones by type. The
//! normalisation needed:
//! - bytea: the recording keeps binary values as hex (`hex: true`); the server prints
//!   `\x` + hex (`bytea_output = hex`, the default), so `\x` is put in front;
//! - float4/float8: the recording spells binary floats as Rust does (shortest round trip, never
//!   an exponent: `100000000000000000000`), the server as PostgreSQL does (`1e+20`). Values are
//!   compared as numbers and every difference of spelling is counted and printed (a finding:
//!   the recorded text is not what PostgreSQL would print);
//! - timestamptz: the recording prints UTC (`+00`), the server the session's time zone, so the
//!   cluster runs with `TimeZone = 'UTC'`.
//!
//! Errors in the extended protocol: the server logs an Execute when it starts it. When an
//! Execute is answered by an error, the error may have come while it ran (logged) or from its
//! Parse or Bind (never started; Bind also plans, so a constant-folded `10 / 0` fails there).
//! The recording keeps no ParseComplete or BindComplete, so it cannot tell which: such an
//! Execute may or may not be in the log (the workload has one of each, and the test says which
//! it found). Executes the server skipped after an error, up to the next Sync, must not be.
//!
//! Not covered, by the nature of the oracle: a simple query with a syntax error is not logged as
//! `statement:` (only as the `STATEMENT:` of its error) though the recording has it. The
//! workloads have none.

use std::collections::{HashMap, HashSet, VecDeque};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::{BufMut, BytesMut};
use gateway::record::event::{Capped, Event, EventKind, Param};
use harness::Lab;
use harness::pg::{self, PgCluster};
use harness::serverlog::{self, Backend, Statement};
use tokio_postgres::types::{IsNull, ToSql, Type, accepts, to_sql_checked};
use uuid::Uuid;

const TARGET: &str = "shop";

/// A statement as the recording has it.
#[derive(Debug)]
enum Recorded {
    Query {
        sql: Capped,
    },
    Execute {
        fetch: bool,
        statement: String,
        portal: String,
        sql: Option<Capped>,
        params: Vec<Param>,
    },
}

/// What the server did with a recorded statement, as far as the recording tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// The server completed it (or, for a simple query, answered it: the server logs every
    /// query string it can parse, failing or not).
    Ran,
    /// An Execute answered by an error. The server logs an Execute when it starts it, so the
    /// log has it when the error came while it ran, and not when the error came from the Parse
    /// or Bind before it (a Bind also plans, so a plan-time error is a Bind error): the
    /// recording holds no ParseComplete or BindComplete to tell which.
    Failed,
    /// Sent after an error and before the next Sync: the server skipped it.
    Discarded,
    /// Never answered (the session ended first).
    Unanswered,
}

/// One session's recording, reduced to what the server log can be compared with.
#[derive(Debug)]
struct Recording {
    session_id: Uuid,
    application: String,
    statements: Vec<(Recorded, Fate)>,
}

/// A client message the server has not answered yet.
enum Pending {
    Query,
    /// The index of the Execute's statement.
    Execute(usize),
    Sync,
}

fn recording(session_id: Uuid, events: &[Event]) -> anyhow::Result<Recording> {
    let Some(EventKind::SessionStart {
        session_id: started,
        person,
        application_name,
        ..
    }) = events.first().map(|e| &e.kind)
    else {
        bail!("{session_id}: the first event is not session_start: {events:?}");
    };
    ensure!(
        *started == session_id,
        "{session_id}: session_start names {started}"
    );
    ensure!(
        person == "alice",
        "{session_id}: session_start names {person}"
    );
    // Per portal: the bind that made it, and whether an execute already ran it.
    let mut portals: HashMap<&str, (&[Param], bool)> = HashMap::new();
    let mut statements: Vec<(Recorded, Fate)> = Vec::new();
    // The server answers client messages in order: each Execute with one completion or an
    // error, a Query and a Sync with ReadyForQuery. After an error in the extended protocol
    // it skips every message up to the next Sync.
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut skipping_until_sync = false;
    for event in events {
        match &event.kind {
            EventKind::Query { sql, .. } => {
                if skipping_until_sync {
                    statements.push((Recorded::Query { sql: sql.clone() }, Fate::Discarded));
                } else {
                    statements.push((Recorded::Query { sql: sql.clone() }, Fate::Unanswered));
                    pending.push_back(Pending::Query);
                }
            }
            EventKind::Bind { portal, params, .. } if !skipping_until_sync => {
                portals.insert(portal, (params, false));
            }
            EventKind::Execute {
                portal,
                statement,
                sql,
                ..
            } => {
                let (params, fetch) = match portals.get_mut(portal.as_str()) {
                    Some((params, ran)) => {
                        let fetch = *ran;
                        if !skipping_until_sync {
                            *ran = true;
                        }
                        (params.to_vec(), fetch)
                    }
                    None if skipping_until_sync => (Vec::new(), false),
                    None => bail!(
                        "{session_id}: event {} executes portal {portal:?}, never bound",
                        event.seq
                    ),
                };
                let recorded = Recorded::Execute {
                    fetch,
                    statement: if statement.is_empty() {
                        "<unnamed>".to_owned()
                    } else {
                        statement.clone()
                    },
                    portal: portal.clone(),
                    sql: sql.clone(),
                    params,
                };
                if skipping_until_sync {
                    statements.push((recorded, Fate::Discarded));
                } else {
                    pending.push_back(Pending::Execute(statements.len()));
                    statements.push((recorded, Fate::Unanswered));
                }
            }
            EventKind::Sync => {
                skipping_until_sync = false;
                pending.push_back(Pending::Sync);
            }
            EventKind::CommandComplete { .. }
            | EventKind::EmptyQuery
            | EventKind::PortalSuspended => {
                if let Some(Pending::Execute(i)) = pending.front() {
                    statements[*i].1 = Fate::Ran;
                    pending.pop_front();
                }
            }
            EventKind::Error(_) => match pending.front() {
                Some(Pending::Query) => {}
                Some(Pending::Execute(i)) => {
                    statements[*i].1 = Fate::Failed;
                    pending.pop_front();
                    // Up to the next Sync, whatever is waiting is skipped, and whatever the
                    // client sends until its next Sync.
                    while let Some(Pending::Execute(i)) = pending.front() {
                        statements[*i].1 = Fate::Discarded;
                        pending.pop_front();
                    }
                    skipping_until_sync = !matches!(pending.front(), Some(Pending::Sync));
                }
                // An error of a Parse, Bind or Describe with no Execute in its batch.
                Some(Pending::Sync) | None => {}
            },
            EventKind::ReadyForQuery { .. } => {
                if matches!(pending.front(), Some(Pending::Query | Pending::Sync)) {
                    pending.pop_front();
                }
            }
            _ => {}
        }
    }
    // A simple query is logged as soon as the server has parsed it.
    for (recorded, fate) in &mut statements {
        if matches!(recorded, Recorded::Query { .. }) && *fate == Fate::Unanswered {
            *fate = Fate::Ran;
        }
    }
    Ok(Recording {
        session_id,
        application: application_name.clone().unwrap_or_default(),
        statements,
    })
}

const OID_FLOAT4: u32 = 700;
const OID_FLOAT8: u32 = 701;

/// Differences the comparison accepted, for the report.
#[derive(Debug, Default)]
struct Notes {
    /// (logged, recorded) spellings of the same float.
    float_spellings: Vec<(String, String)>,
    /// Executes answered by an error that the server logged (the error came while they ran).
    failed_logged: usize,
    /// Executes answered by an error that the server never started (Parse or Bind failed).
    failed_unlogged: Vec<String>,
    /// Executes the server skipped after an error.
    discarded: usize,
}

impl Notes {
    fn extend(&mut self, other: Notes) {
        self.float_spellings.extend(other.float_spellings);
        self.failed_logged += other.failed_logged;
        self.failed_unlogged.extend(other.failed_unlogged);
        self.discarded += other.discarded;
    }
}

fn whole_text(what: &str, capped: &Capped) -> Result<String, String> {
    if capped.redacted {
        return Err(format!("{what} was redacted: {capped:?}"));
    }
    if capped.is_truncated() {
        return Err(format!(
            "{what} was cut to {} of {} bytes",
            capped.text.len(),
            capped.len
        ));
    }
    Ok(if capped.hex {
        format!("\\x{}", capped.text)
    } else {
        capped.text.clone()
    })
}

fn same_param(
    i: usize,
    logged: &Option<String>,
    recorded: &Param,
    notes: &mut Notes,
) -> Result<(), String> {
    let recorded_text = match &recorded.value {
        None => None,
        Some(value) => Some(whole_text(&format!("${}", i + 1), value)?),
    };
    match (logged, &recorded_text) {
        (None, None) => Ok(()),
        (Some(l), Some(r)) if l == r => Ok(()),
        (Some(l), Some(r))
            if matches!(recorded.type_oid, OID_FLOAT4 | OID_FLOAT8) && same_float(l, r) =>
        {
            notes.float_spellings.push((l.clone(), r.clone()));
            Ok(())
        }
        _ => Err(format!(
            "${}: logged {logged:?}, recorded {recorded_text:?} (type {})",
            i + 1,
            recorded.type_oid
        )),
    }
}

fn same_float(a: &str, b: &str) -> bool {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
        _ => false,
    }
}

fn same_statement(
    logged: &Statement,
    recorded: &Recorded,
    notes: &mut Notes,
) -> Result<(), String> {
    match (logged, recorded) {
        (Statement::Simple { sql }, Recorded::Query { sql: recorded_sql }) => {
            let text = whole_text("query", recorded_sql)?;
            if *sql == text {
                Ok(())
            } else {
                Err(format!("query: logged {sql:?}, recorded {text:?}"))
            }
        }
        (
            Statement::Execute {
                fetch,
                statement,
                portal,
                sql,
                params,
            },
            Recorded::Execute {
                fetch: recorded_fetch,
                statement: recorded_statement,
                portal: recorded_portal,
                sql: recorded_sql,
                params: recorded_params,
            },
        ) => {
            let text = match recorded_sql {
                Some(capped) => whole_text("execute", capped)?,
                None => return Err(format!("execute of {recorded_statement:?} has no SQL")),
            };
            if (fetch, statement, portal, sql)
                != (recorded_fetch, recorded_statement, recorded_portal, &text)
            {
                return Err(format!(
                    "execute: logged {:?}, recorded {:?}",
                    (fetch, statement, portal, sql),
                    (recorded_fetch, recorded_statement, recorded_portal, text)
                ));
            }
            if params.len() != recorded_params.len() {
                return Err(format!(
                    "execute {statement}: {} parameters logged, {} recorded",
                    params.len(),
                    recorded_params.len()
                ));
            }
            for (i, (l, r)) in params.iter().zip(recorded_params).enumerate() {
                same_param(i, l, r, notes).map_err(|e| format!("execute {statement}: {e}"))?;
            }
            Ok(())
        }
        _ => Err(format!("logged {logged:?}, recorded {recorded:?}")),
    }
}

/// Ok with the accepted differences, or the first statement that differs. A statement that
/// ran must be in the log, one that was discarded must not, one that failed may be.
fn same_statements(logged: &[Statement], recorded: &[(Recorded, Fate)]) -> Result<Notes, String> {
    let mut notes = Notes::default();
    let mut next = 0;
    for (i, (r, fate)) in recorded.iter().enumerate() {
        let l = logged.get(next);
        match fate {
            Fate::Discarded => notes.discarded += 1,
            Fate::Ran => {
                let l = l.ok_or_else(|| {
                    format!("recorded statement {i} ({fate:?}) is not in the log: {r:?}")
                })?;
                same_statement(l, r, &mut notes)
                    .map_err(|e| format!("recorded statement {i}, logged {next}: {e}"))?;
                next += 1;
            }
            Fate::Failed | Fate::Unanswered => {
                let mut tried = Notes::default();
                if l.is_some_and(|l| same_statement(l, r, &mut tried).is_ok()) {
                    notes.float_spellings.extend(tried.float_spellings);
                    notes.failed_logged += 1;
                    next += 1;
                } else {
                    notes.failed_unlogged.push(format!("{r:?}"));
                }
            }
        }
    }
    if let Some(extra) = logged.get(next) {
        return Err(format!(
            "logged statement {next} of {} is not in the recording: {extra:?}",
            logged.len()
        ));
    }
    Ok(notes)
}

/// What one workload proved.
struct Outcome {
    logged: usize,
    recorded: usize,
    /// (session, backend PID) pairs.
    pairs: Vec<(Uuid, u32)>,
    notes: Notes,
}

/// Waits for the workload's `sessions` new gateway sessions to end and be sealed, then pairs
/// each recording with the one backend whose logged statements it equals.
async fn check(
    lab: &Lab,
    name: &str,
    log_offset: u64,
    sessions: usize,
    seen: &mut HashSet<Uuid>,
) -> anyhow::Result<Outcome> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let new = loop {
        let all = lab.sessions().await?;
        let new: Vec<_> = all.iter().filter(|s| !seen.contains(&s.id)).collect();
        if new.len() >= sessions && new.iter().all(|s| s.ended_at.is_some()) {
            ensure!(new.len() == sessions, "{name}: sessions {new:#?}");
            break new.iter().map(|s| s.id).collect::<Vec<_>>();
        }
        ensure!(
            Instant::now() < deadline,
            "{name}: {sessions} ended sessions expected, have {new:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut recordings = Vec::new();
    for id in new {
        seen.insert(id);
        let (stored, _seal) = lab.sealed_recording(id).await?;
        let events = stored
            .iter()
            .map(|e| serde_json::from_str::<Event>(&e.body))
            .collect::<Result<Vec<Event>, _>>()
            .with_context(|| format!("{name}: events of {id}"))?;
        recordings.push(recording(id, &events)?);
    }

    let text = serverlog::read_since(&lab.pg, log_offset)?;
    let entries = serverlog::parse(&text);
    // The gateway's backends are the role's, connected during this workload.
    let connected: HashSet<u32> = entries
        .iter()
        .filter(|e| e.message.starts_with("connection authorized: "))
        .map(|e| e.pid)
        .collect();
    let mut backends: Vec<Option<Backend>> = serverlog::backends(&entries)?
        .into_iter()
        .filter(|b| b.user == pg::SCRAM_USER && connected.contains(&b.pid))
        .map(Some)
        .collect();
    let logged: usize = backends.iter().flatten().map(|b| b.statements.len()).sum();
    let recorded_statements: usize = recordings.iter().map(|r| r.statements.len()).sum();
    let backend_count = backends.len();

    let mut notes = Notes::default();
    let mut pairs = Vec::new();
    for rec in &recordings {
        let mut misses = Vec::new();
        let mut found = None;
        for (i, slot) in backends.iter().enumerate() {
            let Some(backend) = slot else { continue };
            if backend.application != rec.application {
                continue;
            }
            match same_statements(&backend.statements, &rec.statements) {
                Ok(n) => {
                    found = Some((i, n));
                    break;
                }
                Err(e) => misses.push(format!(
                    "backend {} ({}): {e}",
                    backend.pid, backend.application
                )),
            }
        }
        let Some((i, n)) = found else {
            bail!(
                "{name}: the recording of session {} ({}, {} statements) equals no backend's \
                 log:\n{}",
                rec.session_id,
                rec.application,
                rec.statements.len(),
                misses.join("\n")
            );
        };
        let backend = backends[i].take().context("taken once")?;
        notes.extend(n);
        pairs.push((rec.session_id, backend.pid));
    }
    let unrecorded: Vec<String> = backends
        .iter()
        .flatten()
        .map(|b| {
            format!(
                "backend {} ({}): {} statements, first {:?}",
                b.pid,
                b.application,
                b.statements.len(),
                b.statements.first()
            )
        })
        .collect();
    ensure!(
        unrecorded.is_empty(),
        "{name}: the server ran statements in backends no recording accounts for:\n{}",
        unrecorded.join("\n")
    );
    // Recorded statements the server ran: all but those it never started.
    let recorded = recorded_statements - notes.discarded - notes.failed_unlogged.len();
    eprintln!(
        "{name}: {} sessions, {backend_count} backends; statements logged by the server \
         {logged}, recorded {recorded_statements}, of which ran {recorded} (failed and logged \
         {}, failed before starting {}, skipped after an error {})",
        recordings.len(),
        notes.failed_logged,
        notes.failed_unlogged.len(),
        notes.discarded,
    );
    for statement in &notes.failed_unlogged {
        eprintln!("  recorded, failed before it started: {statement}");
    }
    assert_eq!(logged, recorded, "{name}: statements logged and recorded");
    Ok(Outcome {
        logged,
        recorded,
        pairs,
        notes,
    })
}

/// timestamptz in its binary form: microseconds since 2000-01-01 00:00 UTC (tokio-postgres has
/// no time type without a feature this crate does not enable).
#[derive(Debug)]
struct Timestamptz(i64);

impl ToSql for Timestamptz {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.put_i64(self.0);
        Ok(IsNull::No)
    }

    accepts!(TIMESTAMPTZ);
    to_sql_checked!();
}

/// Parameters of the `i`th execution: NULLs in turn in every column, quotes, unicode,
/// newlines, extreme integers, floats PostgreSQL prints with an exponent, bytes 0x00 to 0xff.
#[allow(clippy::type_complexity)]
fn values(
    i: i32,
) -> (
    Option<i32>,
    Option<i64>,
    Option<bool>,
    Option<f64>,
    Option<String>,
    Option<Vec<u8>>,
    Option<Timestamptz>,
) {
    let null = |column: i32| (i + column) % 11 == 0;
    let int4 = match i {
        1 => i32::MIN,
        2 => i32::MAX,
        _ => i.wrapping_mul(7919) - 1_000_000,
    };
    let int8 = match i {
        3 => i64::MIN,
        4 => i64::MAX,
        _ => i64::from(i) * 1_000_000_007 * if i % 2 == 0 { 1 } else { -1 },
    };
    const FLOATS: &[f64] = &[
        0.1,
        0.30000000000000004,
        1e20,
        1.5e-7,
        -0.0,
        f64::MAX,
        123_456_789.125,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1e15,
        99_999_999_999_999.0,
        f64::MIN_POSITIVE,
    ];
    let float8 = if (i as usize).is_multiple_of(2) {
        FLOATS[(i as usize / 2) % FLOATS.len()]
    } else {
        f64::from(i) / 8.0 - 20.0
    };
    let texts = [
        format!("plain {i}"),
        format!("it's ''doubled'' {i}"),
        format!("héllo wörld ✓ 日本語 🚀 {i}"),
        format!("two\nlines\n\tindented {i}"),
        "a', $2 = NULL, $3 = 'b".to_owned(),
        "back\\slash \\x00 ".to_owned(),
        String::new(),
        "NULL".to_owned(),
    ];
    let text = texts[i as usize % texts.len()].clone();
    let bytea: Vec<u8> = (0..(i % 17))
        .map(|j| (i * 31 + j * 97) as u8)
        .chain((i % 5 == 0).then_some([0u8, 0xff]).into_iter().flatten())
        .collect();
    let micros = match i % 4 {
        0 => 800_000_000_000_000 + i64::from(i) * 1_234_567_891,
        1 => -(i64::from(i) * 1_000_000_000_000), // before 2000, some before 1970
        2 => i64::from(i) * 1_000_000,            // whole seconds
        _ => i64::from(i) * 86_400_000_000 + 500_000,
    };
    (
        (!null(0)).then_some(int4),
        (!null(1)).then_some(int8),
        (!null(2)).then_some(i % 3 == 0),
        (!null(3)).then_some(float8),
        (!null(4)).then_some(text),
        (!null(5)).then_some(bytea),
        (!null(6)).then_some(Timestamptz(micros)),
    )
}

/// pgbench through the gateway in each query mode; the tables come from `pgbench -i` run on
/// the cluster as the superuser.
fn pgbench(lab: &Lab, token: &str, mode: &str) -> anyhow::Result<()> {
    let bin = pg::postgres_bin_dir()?.join("pgbench");
    let port = lab.bastion.gateway_port.to_string();
    let out = Command::new(&bin)
        .args(["-h", "127.0.0.1", "-p", &port, "-U", "alice"])
        .args(["-M", mode, "-n", "-c", "2", "-j", "1", "-t", "200"])
        .arg(TARGET)
        .env("PGPASSWORD", token)
        .env("PGSSLMODE", "require")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "pgbench -M {mode}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        stdout.contains("number of transactions actually processed: 400/400")
            && stdout.contains("number of failed transactions: 0"),
        "pgbench -M {mode}: {stdout}"
    );
    Ok(())
}

const PSQL_SCRIPT: &str = r#"\set ON_ERROR_STOP off
create temp table ledger (id int primary key, note text, amount numeric);
copy ledger (id, note, amount) from stdin;
1	first	10.5
2	it's "quoted"	-3
3	héllo ✓	0
\.
begin;
insert into ledger values (4, 'in a transaction', 1);
update ledger
   set amount = amount * 2
 where id in (1, 2);
commit;
begin;
insert into ledger values (5, 'rolled back', 5);
select 1/0;
select 'refused: the transaction is aborted';
rollback;
select count(*) from ledger \; select sum(amount) from ledger \; select 'three in one query';
copy (select id, note from ledger order by id) to stdout;
copy ledger to stdout with (format csv);
select current_setting('pgbastion.identity');
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_statement_the_server_ran_is_recorded_in_order_with_its_values() -> anyhow::Result<()>
{
    let started = Instant::now();
    let mut cluster = PgCluster::start()?;
    // The recording prints timestamptz in UTC; the server prints the session's zone.
    cluster.alter_system("TimeZone", "UTC")?;
    serverlog::enable_statement_log(&mut cluster)?;
    let lab = Lab::start_with(cluster, &[])?;
    let issued = lab.scram_target(TARGET, &[])?;
    let bin = pg::postgres_bin_dir()?.join("pgbench");
    let port = lab.pg.port().to_string();
    let init = Command::new(&bin)
        .args([
            "-i",
            "-s",
            "1",
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            pg::SUPERUSER,
        ])
        .arg(pg::APP_DB)
        .output()?;
    ensure!(
        init.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    lab.pg.psql(
        pg::APP_DB,
        &format!(
            "grant select, insert, update on pgbench_accounts, pgbench_branches, \
             pgbench_tellers, pgbench_history to {}",
            pg::SCRAM_USER
        ),
    )?;

    // Most of this is building the pgbastion binary when the workspace changed.
    eprintln!(
        "cluster, gateway and pgbench tables ready at {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut seen = HashSet::new();
    let mut report = Vec::new();
    let mut floats = Vec::new();

    // 1. pgbench: one session for the scale check and one per client, in each mode.
    for mode in ["simple", "extended", "prepared"] {
        let offset = serverlog::log_len(&lab.pg)?;
        pgbench(&lab, &issued.token, mode)?;
        let name = format!("pgbench -M {mode}");
        let outcome = check(&lab, &name, offset, 3, &mut seen).await?;
        report.push((name, outcome.logged, outcome.recorded));
    }

    // 2. psql: COPY both ways, transactions, an error inside one, a multi-statement query.
    let offset = serverlog::log_len(&lab.pg)?;
    let out = lab.psql(TARGET, &issued.token, PSQL_SCRIPT)?;
    for line in [
        "1\tfirst",
        "4\tin a transaction",
        "3,héllo ✓,0",
        "three in one query",
    ] {
        ensure!(out.contains(line), "psql printed:\n{out}");
    }
    ensure!(!out.contains("rolled back"), "psql printed:\n{out}");
    ensure!(out.trim_end().ends_with("alice"), "psql printed:\n{out}");
    let outcome = check(&lab, "psql script", offset, 1, &mut seen).await?;
    report.push(("psql script".into(), outcome.logged, outcome.recorded));

    // 3. tokio-postgres: the server says who it runs for, then one named statement executed
    // 500 times with binary parameters, then two executions that fail.
    let offset = serverlog::log_len(&lab.pg)?;
    let client = lab.client(TARGET, &issued.token).await?;
    let who = client
        .query_one(
            "select current_setting('pgbastion.identity'), \
             current_setting('pgbastion.session_id'), pg_backend_pid()",
            &[],
        )
        .await?;
    let (identity, session_id, backend_pid): (String, String, i32) =
        (who.get(0), who.get(1), who.get(2));
    assert_eq!(identity, "alice");
    let statement = client
        .prepare(
            "select $1::int4, $2::int8, $3::bool, $4::float8, $5::text, $6::bytea, \
             $7::timestamptz",
        )
        .await?;
    for i in 0..500 {
        let (a, b, c, d, e, f, g) = values(i);
        let row = client
            .query_one(&statement, &[&a, &b, &c, &d, &e, &f, &g])
            .await?;
        ensure!(row.get::<_, Option<i32>>(0) == a && row.get::<_, Option<String>>(4) == e);
    }
    // Two failures: one while planning, which PostgreSQL does at Bind (it folds 10 / 0 of a
    // custom plan), so the Execute never starts; one while running (random() is not folded).
    for sql in [
        "select 10 / $1::int4",
        "select 10 / ($1::int4 + (random() * 0)::int4)",
    ] {
        let divide = client.prepare(sql).await?;
        let refused = client.query(&divide, &[&0i32]).await.unwrap_err();
        let message = refused.as_db_error().map(|e| e.message().to_owned());
        ensure!(
            message.as_deref() == Some("division by zero"),
            "{refused:?}"
        );
    }
    drop((statement, client));
    let outcome = check(&lab, "tokio-postgres prepared", offset, 1, &mut seen).await?;
    assert_eq!(
        outcome.pairs,
        [(session_id.parse::<Uuid>()?, backend_pid as u32)],
        "the server's own session id and PID are those of the paired recording and backend"
    );
    assert_eq!(
        (
            outcome.notes.failed_logged,
            outcome.notes.failed_unlogged.len()
        ),
        (1, 1),
        "one failed execute started, one did not"
    );
    floats.extend(outcome.notes.float_spellings);
    report.push((
        "tokio-postgres prepared".into(),
        outcome.logged,
        outcome.recorded,
    ));

    // 4. A pipeline: many queries in flight at once on one connection.
    let offset = serverlog::log_len(&lab.pg)?;
    let client = lab.client(TARGET, &issued.token).await?;
    let statement = client.prepare("select $1::int4 * 2, $2::text").await?;
    let prepared = futures::future::join_all((0..300).map(|i: i32| {
        let (client, statement) = (&client, &statement);
        async move {
            let label = format!("p{i}'");
            let row = client.query_one(statement, &[&i, &label]).await?;
            anyhow::Ok(row.get::<_, i32>(0) == i * 2 && row.get::<_, String>(1) == label)
        }
    }));
    let ad_hoc = futures::future::join_all((0..30).map(|i: i64| {
        let client = &client;
        async move {
            let row = client.query_one("select $1::int8 + 1", &[&i]).await?;
            anyhow::Ok(row.get::<_, i64>(0) == i + 1)
        }
    }));
    let (prepared, ad_hoc) = futures::future::join(prepared, ad_hoc).await;
    for ok in prepared.into_iter().chain(ad_hoc) {
        ensure!(ok?, "a pipelined query returned the wrong row");
    }
    drop((statement, client));
    let outcome = check(&lab, "tokio-postgres pipeline", offset, 1, &mut seen).await?;
    let (id, _) = outcome.pairs[0];
    let (stored, _) = lab.sealed_recording(id).await?;
    let mut in_flight = 0usize;
    let mut most_in_flight = 0;
    for e in &stored {
        match e.kind.as_str() {
            "execute" => in_flight += 1,
            "command_complete" | "error" => in_flight = in_flight.saturating_sub(1),
            _ => {}
        }
        most_in_flight = most_in_flight.max(in_flight);
    }
    eprintln!("tokio-postgres pipeline: up to {most_in_flight} executes in flight");
    ensure!(most_in_flight > 1, "the queries were not pipelined");
    report.push((
        "tokio-postgres pipeline".into(),
        outcome.logged,
        outcome.recorded,
    ));

    eprintln!("workload: statements logged by the server / recorded");
    for (name, logged, recorded) in &report {
        eprintln!("  {name}: {logged} / {recorded}");
    }
    let mut distinct = floats.clone();
    distinct.sort();
    distinct.dedup();
    eprintln!(
        "float parameters spelled differently by the server and the recording (same value): \
         {} of the values, {} distinct, e.g. {:?}",
        floats.len(),
        distinct.len(),
        distinct.iter().take(6).collect::<Vec<_>>()
    );
    eprintln!("total {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
