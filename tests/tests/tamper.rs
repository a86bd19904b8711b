//! Tampering with a recording where it is stored: sessions recorded through the real gateway,
//! then edited in the store's own tables with SQL, as someone with write access to the store
//! could. `pgbastion verify` must fail and name the first bad event each time, on both engines.
//!
//! Events are stored in blocks (`migrations/*/0005_recording_blocks.sql`): one row holds a run of
//! a session's events, their bodies joined by '\n'. Each case tampers inside that layout: one
//! event's text in a block, a whole block, two events swapped in a body, the last events cut off
//! the last block. Each case has a session of its own.

use std::path::PathBuf;

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use gateway::record::indexer::index_round;
use gateway::record::integrity::{Integrity, assess, data_dir_keys};
use gateway::store::StoredEvent;
use harness::lab::PG_STORE_DB;
use harness::pg::PgCluster;
use harness::{Issued, Lab};
use uuid::Uuid;

/// SQL run on the store's database directly, not through pgbastion: Python's sqlite3 module for
/// the SQLite store (the tests crate has no SQL driver of its own; scripts/setup installs
/// Python), psql for a PostgreSQL store.
enum Raw<'c> {
    Sqlite(PathBuf),
    Postgres(&'c PgCluster),
}

impl Raw<'_> {
    /// Runs one statement; returns its rows as lines of `|`-separated values.
    fn run(&self, sql: &str) -> anyhow::Result<Vec<String>> {
        let out = match self {
            Raw::Postgres(cluster) => cluster.psql(PG_STORE_DB, sql)?,
            Raw::Sqlite(path) => {
                const SCRIPT: &str = "import sqlite3, sys\n\
                    db = sqlite3.connect(sys.argv[1], timeout=10, isolation_level=None)\n\
                    for row in db.execute(sys.argv[2]):\n    \
                        print('|'.join('' if v is None else str(v) for v in row))\n";
                let out = std::process::Command::new("python3")
                    .args(["-c", SCRIPT])
                    .arg(path)
                    .arg(sql)
                    .output()
                    .context("cannot run python3 (scripts/setup installs it)")?;
                if !out.status.success() {
                    bail!(
                        "SQL on {} failed: {}\nSQL: {sql}",
                        path.display(),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                String::from_utf8(out.stdout)?
            }
        };
        Ok(out.lines().map(str::to_owned).collect())
    }

    /// `WHERE` for one block of a session.
    fn block(&self, session_id: Uuid, first_seq: i64) -> String {
        let id = match self {
            Raw::Sqlite(_) => format!("x'{}'", session_id.simple()),
            Raw::Postgres(_) => format!("'{session_id}'::uuid"),
        };
        format!("WHERE session_id = {id} AND first_seq = {first_seq}")
    }

    /// The `(first_seq, last_seq)` of each block of a session, in order.
    fn blocks(&self, session_id: Uuid) -> anyhow::Result<Vec<(i64, i64)>> {
        let id = match self {
            Raw::Sqlite(_) => format!("x'{}'", session_id.simple()),
            Raw::Postgres(_) => format!("'{session_id}'::uuid"),
        };
        self.run(&format!(
            "SELECT first_seq, last_seq FROM recording_blocks WHERE session_id = {id} \
             ORDER BY first_seq"
        ))?
        .iter()
        .map(|line| {
            let (first, last) = line.split_once('|').context("two columns")?;
            Ok((first.parse()?, last.parse()?))
        })
        .collect()
    }
}

impl Raw<'_> {
    /// Has the statement index and its chain check start over on a session, as an operator
    /// would after editing a recording: the gateway's indexer may have checked it before.
    fn reset_index(&self, session_id: Uuid) -> anyhow::Result<()> {
        let (id, no) = match self {
            Raw::Sqlite(_) => (format!("x'{}'", session_id.simple()), "0"),
            Raw::Postgres(_) => (format!("'{session_id}'::uuid"), "false"),
        };
        self.run(&format!(
            "DELETE FROM recorded_statements WHERE session_id = {id}"
        ))?;
        self.run(&format!(
            "UPDATE session_stats SET indexed_seq = 0, resume_seq = 0, statements = 0, \
             errors = 0, risky = 0, complete = {no}, chain_verified_seq = NULL, \
             chain_hash = NULL, chain_broken_seq = NULL, chain_broken_reason = NULL \
             WHERE session_id = {id}"
        ))?;
        Ok(())
    }
}

/// A SQL string literal.
fn text(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The value of a block's `body`: its events' bodies joined by '\n'.
fn body_of<'e>(bodies: impl IntoIterator<Item = &'e str>) -> String {
    bodies.into_iter().collect::<Vec<_>>().join("\n")
}

/// A psql session whose statements wait a little between them, so that the gateway's writer
/// (which flushes every 10 ms) stores the session in several blocks.
const SCRIPT: &str = "select id, name from items order by id limit 2;\n\
                      select pg_sleep(0.05);\n\
                      select count(*) from items;\n\
                      select pg_sleep(0.05);\n\
                      select 'second to last';\n\
                      select pg_sleep(0.05);\n\
                      select 'last';\n";

/// One recorded, sealed and verified session of `issued`'s target, its events and blocks.
struct Recorded {
    id: Uuid,
    events: Vec<StoredEvent>,
    blocks: Vec<(i64, i64)>,
}

impl Recorded {
    fn events_of(&self, (first, last): (i64, i64)) -> &[StoredEvent] {
        &self.events[first as usize..=last as usize]
    }
}

async fn record(
    lab: &Lab,
    raw: &Raw<'_>,
    issued: &Issued,
    known: &mut Vec<Uuid>,
) -> anyhow::Result<Recorded> {
    lab.psql("shop", &issued.token, SCRIPT)?;
    let sessions = lab.ended_sessions(known.len() + 1).await?;
    let id = sessions
        .iter()
        .map(|s| s.id)
        .find(|id| !known.contains(id))
        .context("the new session")?;
    known.push(id);
    let (events, _) = lab.sealed_recording(id).await?;
    let out = lab.bastion.cli_ok(&["verify", &id.to_string()])?;
    ensure!(
        out.contains("chain intact, sealed"),
        "before tampering: {out}"
    );
    let blocks = raw.blocks(id)?;
    ensure!(
        blocks.len() >= 3 && blocks.iter().any(|(first, last)| last > first),
        "the session should span several blocks, one of several events: {blocks:?}"
    );
    Ok(Recorded { id, events, blocks })
}

/// Runs `pgbastion verify ID`, which must fail; returns what it said.
fn verify_fails(lab: &Lab, id: Uuid) -> anyhow::Result<String> {
    let out = lab.bastion.cli(&["verify", &id.to_string()])?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        !out.status.success(),
        "verify passed a tampered recording: {said}"
    );
    Ok(said)
}

/// Edits the SQL text (or, for another kind of event, the JSON spacing) of one event that is not
/// the first of its block, rewriting the block's body: the hash no longer matches.
fn edit_one_event(raw: &Raw<'_>, rec: &Recorded) -> anyhow::Result<i64> {
    let (block, i) = rec
        .blocks
        .iter()
        .flat_map(|&b| (1..rec.events_of(b).len()).map(move |i| (b, i)))
        .max_by_key(|&(b, i)| rec.events_of(b)[i].kind == "query")
        .context("a block of several events")?;
    let events = rec.events_of(block);
    let edited = match events[i].body.contains("select") {
        true => events[i].body.replacen("select", "delete", 1),
        false => events[i].body.replacen('{', "{ ", 1),
    };
    let body = body_of(
        events
            .iter()
            .enumerate()
            .map(|(j, e)| if j == i { &edited[..] } else { &e.body[..] }),
    );
    raw.run(&format!(
        "UPDATE recording_blocks SET body = {} {}",
        text(&body),
        raw.block(rec.id, block.0)
    ))?;
    Ok(events[i].seq)
}

/// Swaps the bodies of the first two events of a block (kinds, times and hashes stay).
fn swap_two_events(raw: &Raw<'_>, rec: &Recorded) -> anyhow::Result<i64> {
    let block = *rec
        .blocks
        .iter()
        .find(|(first, last)| last > first)
        .context("a block of several events")?;
    let events = rec.events_of(block);
    let mut bodies: Vec<&str> = events.iter().map(|e| &e.body[..]).collect();
    bodies.swap(0, 1);
    raw.run(&format!(
        "UPDATE recording_blocks SET body = {} {}",
        text(&body_of(bodies)),
        raw.block(rec.id, block.0)
    ))?;
    Ok(block.0)
}

/// Cuts the last event off the last block (removes the block when it holds only one); returns
/// the seq the chain now ends at.
fn truncate_last_block(raw: &Raw<'_>, rec: &Recorded) -> anyhow::Result<i64> {
    let (first, last) = *rec.blocks.last().context("blocks")?;
    let where_ = raw.block(rec.id, first);
    if first == last {
        raw.run(&format!("DELETE FROM recording_blocks {where_}"))?;
        return Ok(first - 1);
    }
    let kept = &rec.events_of((first, last))[..(last - first) as usize];
    let kinds: Vec<&str> = kept.iter().map(|e| &e.kind[..]).collect();
    raw.run(&format!(
        "UPDATE recording_blocks SET last_seq = {}, kinds = {}, body = {}, \
         ats = substr(ats, 1, {}), hashes = substr(hashes, 1, {}) {where_}",
        last - 1,
        text(&kinds.join(",")),
        text(&body_of(kept.iter().map(|e| &e.body[..]))),
        8 * kept.len(),
        32 * kept.len(),
    ))?;
    Ok(last - 1)
}

async fn tampering_is_found_and_the_first_bad_event_named(
    lab: &Lab,
    raw: &Raw<'_>,
) -> anyhow::Result<()> {
    let issued = lab.scram_target("shop", &[])?;
    let mut known = Vec::new();

    let rec = record(lab, raw, &issued, &mut known).await?;
    let seq = edit_one_event(raw, &rec)?;
    let said = verify_fails(lab, rec.id)?;
    ensure!(
        said.contains(&format!("event at seq {seq} (")) && said.contains("(edited)"),
        "edited seq {seq}; verify said: {said}"
    );

    let rec = record(lab, raw, &issued, &mut known).await?;
    let (first, _) = rec.blocks[rec.blocks.len() / 2];
    raw.run(&format!(
        "DELETE FROM recording_blocks {}",
        raw.block(rec.id, first)
    ))?;
    let said = verify_fails(lab, rec.id)?;
    ensure!(
        said.contains(&format!("seq {first} is missing (deleted)")),
        "deleted the block from seq {first}; verify said: {said}"
    );

    let rec = record(lab, raw, &issued, &mut known).await?;
    let first = swap_two_events(raw, &rec)?;
    let said = verify_fails(lab, rec.id)?;
    ensure!(
        said.contains(&format!(
            "events {first} and {} are out of order",
            first + 1
        )),
        "swapped seqs {first} and {}; verify said: {said}",
        first + 1
    );

    let rec = record(lab, raw, &issued, &mut known).await?;
    let ends_at = truncate_last_block(raw, &rec)?;
    let said = verify_fails(lab, rec.id)?;
    ensure!(
        said.contains(&format!(
            "chain ends at seq {ends_at} but the seal says {} events (truncated)",
            rec.events.len()
        )),
        "cut the chain after seq {ends_at}; verify said: {said}"
    );
    Ok(())
}

/// The session list's verdict (`record::integrity::assess`, from what the indexer checked and
/// the seal): broken at the edited event, verified for an untouched sealed recording.
async fn the_indexer_finds_the_edited_event_and_passes_the_untouched_recording(
    lab: &Lab,
    raw: &Raw<'_>,
) -> anyhow::Result<()> {
    let issued = lab.scram_target("shop", &[])?;
    let mut known = Vec::new();
    let untouched = record(lab, raw, &issued, &mut known).await?;
    let edited = record(lab, raw, &issued, &mut known).await?;
    let seq = edit_one_event(raw, &edited)?;
    for id in [untouched.id, edited.id] {
        raw.reset_index(id)?;
    }
    let store = lab.store().await?;
    let keys = data_dir_keys(lab.bastion.data_path())?;
    let deadline = Instant::now() + Duration::from_secs(20);
    // This test's rounds and the gateway's own index the sessions, whichever comes first.
    let verdict = |id| {
        let store = store.clone();
        let keys = &keys;
        async move {
            loop {
                index_round(store.as_ref()).await?;
                let stats = store.session_stats(&[id]).await?;
                let session = store.session(id).await?.context("session")?;
                let seal = store.recording_seal(id).await?;
                let verdict = assess(&session, stats.get(&id), seal.as_ref(), keys);
                if verdict != Integrity::Pending || Instant::now() > deadline {
                    return anyhow::Ok(verdict);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let got = verdict(untouched.id).await?;
    ensure!(
        matches!(got, Integrity::Verified { events, .. } if events == untouched.events.len() as u64),
        "untouched: {got:?}"
    );
    let got = verdict(edited.id).await?;
    ensure!(
        matches!(&got, Integrity::Broken { seq: Some(s), reason } if *s == seq && reason.contains("(edited)")),
        "edited seq {seq}: {got:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_indexer_names_the_edited_event_of_a_sqlite_store() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    let url = lab.bastion.store_url();
    let path = url
        .strip_prefix("sqlite://")
        .with_context(|| format!("a SQLite store, not {url}"))?;
    the_indexer_finds_the_edited_event_and_passes_the_untouched_recording(
        &lab,
        &Raw::Sqlite(path.into()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_indexer_names_the_edited_event_of_a_postgres_store() -> anyhow::Result<()> {
    let (lab, store) = Lab::start_with_pg_store(&[])?;
    let outcome = the_indexer_finds_the_edited_event_and_passes_the_untouched_recording(
        &lab,
        &Raw::Postgres(&store),
    )
    .await;
    // The gateway stops before its store does.
    drop(lab);
    drop(store);
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_with_blocks_in_a_sqlite_store_fails_verify_naming_the_first_bad_event()
-> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    let url = lab.bastion.store_url();
    let path = url
        .strip_prefix("sqlite://")
        .with_context(|| format!("a SQLite store, not {url}"))?;
    tampering_is_found_and_the_first_bad_event_named(&lab, &Raw::Sqlite(path.into())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_with_blocks_in_a_postgres_store_fails_verify_naming_the_first_bad_event()
-> anyhow::Result<()> {
    let (lab, store) = Lab::start_with_pg_store(&[])?;
    let outcome =
        tampering_is_found_and_the_first_bad_event_named(&lab, &Raw::Postgres(&store)).await;
    // The gateway stops before its store does.
    drop(lab);
    drop(store);
    outcome
}
