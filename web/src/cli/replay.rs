//! `pgbastion replay`: a recorded session as a psql-like transcript, or as the JSONL export
//! `pgbastion verify --file` checks.

mod lines;
mod transcript;
mod values;

use std::io::{self, BufWriter, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use gateway::record::export::JsonlWriter;
use gateway::store::{self, Store, StoredEvent};
use uuid::Uuid;

use super::Ctx;
use transcript::Transcript;

/// Events read from the store per query: bounded memory for any length of recording.
const PAGE: i64 = 1000;

/// How often `--follow` looks for new events.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReplayFormat {
    /// A psql-like transcript.
    Text,
    /// The export format: a header, one line per event, the seal.
    Jsonl,
}

/// The long help of the command (on its variant in `cli::Command`, whose doc comment
/// would otherwise replace it).
pub const LONG_ABOUT: &str = "Show what a session did, from its recording.\n\n\
                  --format text (the default) prints a psql-like transcript: who connected \
                  from where, then each statement at a prompt (shop=>, shop=*> inside a \
                  transaction, shop=!> in a failed one) with its bound parameters, its result \
                  as recorded (rows beyond the recording caps are counted, not shown), the \
                  command tag, errors and notices, COPY, notifications and the time it took. \
                  Recorded text is shown with control characters escaped, so a recorded value \
                  cannot act on your terminal.\n\n\
                  --format jsonl writes the recording as an export that `pgbastion verify \
                  --file` checks with only the public key.\n\n\
                  --follow shows a live session as it goes on, until it has ended and its \
                  recording is sealed.\n\n\
                  Examples:\n  \
                  pgbastion replay 0b6f0c1e-8a52-4a4e-9d0e-1f1f7d1c2a3b | less -R\n  \
                  pgbastion replay 0b6f0c1e-8a52-4a4e-9d0e-1f1f7d1c2a3b --follow\n  \
                  pgbastion replay 0b6f0c1e-8a52-4a4e-9d0e-1f1f7d1c2a3b --format jsonl > \
                  session.jsonl\n  \
                  pgbastion verify --file session.jsonl --public-key recording.pub";

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The session's id (see `pgbastion sessions`).
    session: Uuid,
    /// Keep showing new events of a live session until it ends and is sealed.
    #[arg(long)]
    follow: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReplayFormat::Text)]
    format: ReplayFormat,
}

pub async fn run(args: ReplayArgs, ctx: &Ctx) -> anyhow::Result<()> {
    let store = ctx.store.clone();
    let session = store.session(args.session).await?.with_context(|| {
        format!(
            "session {} does not exist; `pgbastion sessions` lists them",
            args.session
        )
    })?;
    // Followed output goes out line by line (stdout is line-buffered); a finished recording is
    // written in large blocks.
    let result = if args.follow {
        replay(store, &session, args, io::stdout()).await
    } else {
        replay(store, &session, args, BufWriter::new(io::stdout())).await
    };
    match result {
        // `replay … | head` closing the pipe early is not a failure.
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

async fn replay<W: Write>(
    store: Arc<dyn Store>,
    session: &gateway::store::Session,
    args: ReplayArgs,
    out: W,
) -> anyhow::Result<()> {
    let id = session.id;
    match args.format {
        ReplayFormat::Text => {
            let mut transcript = Transcript::new(out, &session.target_name);
            transcript.header(session)?;
            for_each_event(store, id, args.follow, |event| {
                transcript.stored(event).map_err(Into::into)
            })
            .await?;
            transcript.finish()?;
        }
        ReplayFormat::Jsonl => {
            // A sealed recording names its key in the header; a followed one learns its seal
            // only at the end.
            let seal = store.recording_seal(id).await?;
            let key_id = seal.as_ref().map(|s| s.key_id.as_str());
            let mut writer = JsonlWriter::new(out, id, key_id)?;
            for_each_event(store.clone(), id, args.follow, |event| {
                writer.event(event).map_err(Into::into)
            })
            .await?;
            let seal = match seal {
                Some(seal) => Some(seal),
                None if args.follow => store.recording_seal(id).await?,
                None => None,
            };
            writer.finish(seal.as_ref())?;
        }
    }
    Ok(())
}

/// Calls `each` with every event of the session in order: what is stored now, page by page,
/// or (`follow`) until the session has ended and its recording is sealed.
async fn for_each_event(
    store: Arc<dyn Store>,
    session_id: Uuid,
    follow: bool,
    mut each: impl FnMut(&StoredEvent) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if follow {
        let mut events = store::follow_events(store, session_id, 0, FOLLOW_POLL);
        while let Some(event) = events.recv().await {
            each(&event.with_context(|| format!("cannot follow session {session_id}"))?)?;
        }
        return Ok(());
    }
    let mut from_seq = 0;
    loop {
        let page = store.session_events(session_id, from_seq, PAGE).await?;
        for event in &page {
            each(event)?;
        }
        match page.last() {
            Some(last) if page.len() as i64 == PAGE => from_seq = last.seq + 1,
            _ => return Ok(()),
        }
    }
}
