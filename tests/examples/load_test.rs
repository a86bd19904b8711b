//! Proof under load: `scripts/load-test` (not in CI).
//!
//! Holds `--connections` TLS client connections (default 2,000) through ONE gateway that records
//! every statement (strict, the default policy, on the default SQLite store, console and its
//! statement indexer enabled), loopback only, and reports:
//!
//! - memory per idle connection: the gateway's VmRSS with no client vs with every connection
//!   open and idle (each has run one statement), divided by the connections;
//! - CPU per statement: the gateway's utime+stime over the busy phase / statements run in it;
//! - added latency: the same statements run by a few clients straight to PostgreSQL (TLS) and
//!   through the gateway, alternating, while all the idle connections stay open: p50 and p99;
//! - that the recorded statements (Query and Execute events in the store, and the statement
//!   index) number exactly the statements the clients ran.
//!
//! Phases: warm-up (a few short sessions, so code and allocator pools are paged in before the
//! baseline), connect all, measure idle, busy phase for `--seconds` (`--busy-fraction` of the
//! connections loop a pgbench-like SELECT by primary key and UPDATE; the others run one of them
//! every 30 s), latency comparison, close everything, wait for the recording, count.
//!
//!   PGBASTION_BIN=target/release/pgbastion cargo run --release -p pgbastion-tests \
//!     --example load_test -- --connections 2000 --seconds 180 --busy-fraction 0.1

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::{StreamExt, TryStreamExt, stream};
use gateway::store::Store;
use harness::clients::{ConnectionTask, tls_config, tokio_postgres_connect_with};
use harness::{Lab, PgCluster, pg};
use tokio::sync::watch;
use tokio_postgres::{Client, Statement};
use uuid::Uuid;

const TARGET: &str = "load";
/// Rows of the pgbench-like table the statements read and update.
const ACCOUNTS: i32 = 100_000;
/// An idle connection runs one statement this often.
const IDLE_INTERVAL: Duration = Duration::from_secs(30);
/// Short sessions run before the baseline is taken.
const WARMUP_SESSIONS: usize = 16;
/// Connections being opened at once: the gateway's and PostgreSQL's logins are CPU-bound (SCRAM).
const CONNECT_CONCURRENCY: usize = 32;
/// Clients on each path of the latency comparison.
const LATENCY_CLIENTS: usize = 4;
/// The comparison alternates the paths in rounds, so that other people's builds on the shared
/// cores weigh on both alike.
const LATENCY_ROUNDS: usize = 3;
const LATENCY_SLICE: Duration = Duration::from_secs(5);
/// Time for the gateway's memory to settle after connecting, before RSS is read.
const SETTLE: Duration = Duration::from_secs(3);
/// The load stays bounded in time: a token's lifetime (below the grant's default 8 h cap) is
/// far beyond this.
const MAX_SECONDS: u64 = 3600;
const MAX_CONNECTIONS: usize = 20_000;

struct Args {
    connections: usize,
    seconds: u64,
    busy_fraction: f64,
    /// The target's recording policy: strict (the default), buffered or off.
    recording: String,
    results: PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        connections: 2000,
        seconds: 180,
        busy_fraction: 0.1,
        recording: "strict".into(),
        results: Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/load/results.txt"),
    };
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--connections" => args.connections = value()?.parse().context("--connections N")?,
            "--seconds" => args.seconds = value()?.parse().context("--seconds S")?,
            "--busy-fraction" => {
                args.busy_fraction = value()?.parse().context("--busy-fraction F")?
            }
            "--recording" => args.recording = value()?,
            "--results" => args.results = PathBuf::from(value()?),
            other => bail!(
                "unknown argument {other}; use --connections N --seconds S --busy-fraction F \
                 [--recording strict|buffered|off] [--results FILE]"
            ),
        }
    }
    ensure!(
        (1..=MAX_CONNECTIONS).contains(&args.connections),
        "--connections must be 1..={MAX_CONNECTIONS}"
    );
    ensure!(
        (1..=MAX_SECONDS).contains(&args.seconds),
        "--seconds must be 1..={MAX_SECONDS}"
    );
    ensure!(
        (0.0..=1.0).contains(&args.busy_fraction),
        "--busy-fraction must be between 0 and 1"
    );
    ensure!(
        ["strict", "buffered", "off"].contains(&args.recording.as_str()),
        "--recording must be strict, buffered or off"
    );
    Ok(args)
}

// ---------------------------------------------------------------------------------------------
// The gateway process, seen from /proc

struct Proc {
    pid: u32,
}

impl Proc {
    /// A `kB` field of /proc/PID/status (VmRSS, RssAnon, VmHWM...), in KiB.
    fn status_kib(&self, field: &str) -> Result<u64> {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {field} in {path}"))
    }

    /// utime + stime from /proc/PID/stat, in seconds.
    fn cpu_seconds(&self) -> Result<f64> {
        let path = format!("/proc/{}/stat", self.pid);
        let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        // Fields after the command name (which may hold spaces) start at field 3 (state);
        // utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')').context("malformed stat")? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        // SAFETY: sysconf takes an integer and touches no memory of ours.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Ok(ticks as f64 / per_second as f64)
    }

    fn open_files_limit(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/limits", self.pid))
            .ok()
            .and_then(|l| {
                l.lines()
                    .find(|l| l.starts_with("Max open files"))
                    .map(str::to_owned)
            })
            .map(|l| {
                l.split_whitespace()
                    .skip(3)
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" / ")
            })
            .unwrap_or_else(|| "?".into())
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Raises this process's soft RLIMIT_NOFILE to `needed` (the gateway and PostgreSQL started
/// from here inherit it); returns the limit before and after.
fn raise_open_files(needed: u64) -> Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and nothing else.
    ensure!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0,
        "getrlimit: {}",
        std::io::Error::last_os_error()
    );
    let before = limit.rlim_cur;
    if before >= needed {
        return Ok((before, before));
    }
    ensure!(
        limit.rlim_max >= needed,
        "open files: need {needed}, the hard limit is {}: raise it (ulimit -Hn, as root) or use \
         fewer --connections",
        limit.rlim_max
    );
    limit.rlim_cur = needed;
    // SAFETY: setrlimit reads the struct we pass and nothing else.
    ensure!(
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0,
        "setrlimit: {}",
        std::io::Error::last_os_error()
    );
    Ok((before, needed))
}

// ---------------------------------------------------------------------------------------------
// Clients and the statement mix

/// One client connection with the two statements of the mix prepared on it.
struct Conn {
    client: Client,
    task: ConnectionTask,
    select: Statement,
    update: Statement,
    /// Which statement runs next (they alternate), and the state of its aid generator.
    step: u64,
    rng: u64,
}

impl Conn {
    async fn open(conn_str: &str, seed: u64) -> Result<Conn> {
        let (client, task) = tokio_postgres_connect_with(conn_str, tls_config(None, None)?).await?;
        let select = client
            .prepare("SELECT abalance FROM load_accounts WHERE aid = $1")
            .await?;
        let update = client
            .prepare("UPDATE load_accounts SET abalance = abalance + $1 WHERE aid = $2")
            .await?;
        Ok(Conn {
            client,
            task,
            select,
            update,
            step: 0,
            // xorshift must not start at zero.
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        })
    }

    fn next_aid(&mut self) -> i32 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % ACCOUNTS as u64) as i32 + 1
    }

    /// Runs the next statement of the mix (SELECT by primary key, then UPDATE, and so on);
    /// returns how long it took as the client saw it.
    async fn step(&mut self) -> Result<Duration, tokio_postgres::Error> {
        let aid = self.next_aid();
        let started = Instant::now();
        if self.step.is_multiple_of(2) {
            self.client.query_opt(&self.select, &[&aid]).await?;
        } else {
            let delta = (self.rng % 10_000) as i32 - 5_000;
            self.client.execute(&self.update, &[&delta, &aid]).await?;
        }
        self.step += 1;
        Ok(started.elapsed())
    }

    /// Closes the connection (Terminate) and waits for its end.
    async fn close(self) {
        drop(self.client);
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
    }
}

/// Statements run through the gateway, counted as the clients saw them end.
#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    /// The server answered with an error: it ran the statement, so it is recorded too.
    server_errors: AtomicU64,
    /// The gateway ended the session instead of forwarding the statement (its own FATAL 57000,
    /// e.g. when the recording falls too far behind).
    refused: AtomicU64,
    /// No answer (the connection failed): whether the server ran it is unknown.
    lost: AtomicU64,
}

impl Counts {
    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    fn server_errors(&self) -> u64 {
        self.server_errors.load(Ordering::Relaxed)
    }

    fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Counts a statement's outcome; prints the first few failures.
    fn record(&self, result: &Result<Duration, tokio_postgres::Error>) {
        let Err(e) = result else {
            self.ok.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let counter = match e.as_db_error() {
            Some(db) if db.code().code() == "57000" && db.message().starts_with("pgbastion") => {
                &self.refused
            }
            Some(_) => &self.server_errors,
            None => &self.lost,
        };
        if counter.fetch_add(1, Ordering::Relaxed) < 5 {
            eprintln!("load-test: a statement failed: {}", describe(e));
        }
    }
}

/// A client-side error with what the server said, if it said anything.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// Runs the mix as fast as one connection can until `stop`; returns the latencies (µs).
async fn busy_loop(
    mut conn: Conn,
    counts: Arc<Counts>,
    stop: watch::Receiver<bool>,
) -> (Conn, Vec<u32>) {
    let mut latencies = Vec::new();
    while !*stop.borrow() {
        let result = conn.step().await;
        counts.record(&result);
        match result {
            Ok(took) => latencies.push(took.as_micros() as u32),
            Err(_) => break,
        }
    }
    (conn, latencies)
}

/// Runs one statement every [`IDLE_INTERVAL`], the first after `offset`, until `stop`.
async fn idle_loop(
    mut conn: Conn,
    offset: Duration,
    counts: Arc<Counts>,
    mut stop: watch::Receiver<bool>,
) -> Conn {
    let mut next = tokio::time::Instant::now() + offset;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            _ = stop.changed() => return conn,
        }
        let result = conn.step().await;
        counts.record(&result);
        if result.is_err() {
            return conn;
        }
        next += IDLE_INTERVAL;
    }
}

/// Opens `n` connections, [`CONNECT_CONCURRENCY`] at a time, each running one statement.
async fn open_many(conn_str: &str, n: usize, seed: u64, counts: &Arc<Counts>) -> Result<Vec<Conn>> {
    stream::iter(0..n)
        .map(|i| async move {
            let mut conn = Conn::open(conn_str, seed + i as u64)
                .await
                .with_context(|| format!("connection {} of {n}", i + 1))?;
            let first = conn.step().await;
            counts.record(&first);
            first.context("the first statement")?;
            Ok::<_, anyhow::Error>(conn)
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .try_collect()
        .await
}

// ---------------------------------------------------------------------------------------------
// Measurements

/// Latencies of one path, in µs, sorted.
struct Latencies(Vec<u32>);

impl Latencies {
    fn new(mut all: Vec<u32>) -> Self {
        all.sort_unstable();
        Latencies(all)
    }

    fn percentile(&self, p: f64) -> u32 {
        if self.0.is_empty() {
            return 0;
        }
        self.0[((self.0.len() - 1) as f64 * p).round() as usize]
    }

    fn summary(&self) -> String {
        format!(
            "p50 {} µs, p99 {} µs ({} statements)",
            self.percentile(0.5),
            self.percentile(0.99),
            self.0.len()
        )
    }
}

/// The same mix on both paths: [`LATENCY_CLIENTS`] connections each, [`LATENCY_ROUNDS`] rounds
/// of [`LATENCY_SLICE`] per path, the order alternating. Returns (direct, gateway) and the
/// statements run straight to PostgreSQL.
async fn compare_latency(
    direct_str: &str,
    gateway_str: &str,
    counts: &Arc<Counts>,
) -> Result<(Latencies, Latencies, u64)> {
    let uncounted = Arc::new(Counts::default());
    let mut direct = open_many(direct_str, LATENCY_CLIENTS, 1_000_000, &uncounted).await?;
    let mut through = open_many(gateway_str, LATENCY_CLIENTS, 2_000_000, counts).await?;
    let (mut direct_us, mut gateway_us) = (Vec::new(), Vec::new());
    for round in 0..LATENCY_ROUNDS {
        for path in 0..2 {
            let gateway_path = (round + path) % 2 == 1;
            let (conns, tally, out) = if gateway_path {
                (&mut through, counts, &mut gateway_us)
            } else {
                (&mut direct, &uncounted, &mut direct_us)
            };
            let (stop_tx, stop_rx) = watch::channel(false);
            let tasks: Vec<_> = conns
                .drain(..)
                .map(|c| tokio::spawn(busy_loop(c, tally.clone(), stop_rx.clone())))
                .collect();
            tokio::time::sleep(LATENCY_SLICE).await;
            stop_tx.send(true)?;
            for task in tasks {
                let (conn, latencies) = task.await?;
                conns.push(conn);
                out.extend(latencies);
            }
        }
    }
    ensure!(
        uncounted.server_errors() + uncounted.lost() == 0,
        "statements straight to PostgreSQL failed"
    );
    for conn in direct.into_iter().chain(through) {
        conn.close().await;
    }
    Ok((
        Latencies::new(direct_us),
        Latencies::new(gateway_us),
        uncounted.ok(),
    ))
}

/// What the store holds once every session is recorded.
struct Recorded {
    sessions: usize,
    /// Query and Execute events.
    events: u64,
    /// Statements in the statement index, if it caught up within the time given.
    indexed: Option<i64>,
    index_wait: Duration,
}

/// Waits until `expected` sessions have ended and are sealed, counts their Query and Execute
/// events, then waits (up to `index_timeout`) for the console's indexer to have indexed them all.
async fn recorded(store: &dyn Store, expected: usize, index_timeout: Duration) -> Result<Recorded> {
    let deadline = Instant::now() + Duration::from_secs(300);
    let sessions = loop {
        let sessions = store.list_sessions(MAX_CONNECTIONS as i64 * 2).await?;
        let ended = sessions.iter().filter(|s| s.ended_at.is_some()).count();
        if sessions.len() >= expected && ended == sessions.len() {
            break sessions;
        }
        ensure!(
            Instant::now() < deadline,
            "after 300 s: {} sessions stored ({expected} expected), {ended} ended",
            sessions.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let ids: Vec<Uuid> = sessions.iter().map(|s| s.id).collect();
    for &id in &ids {
        while store.recording_seal(id).await?.is_none() {
            ensure!(
                Instant::now() < deadline,
                "session {id} not sealed after 300 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let mut events = 0u64;
    for &id in &ids {
        let mut from = 0;
        loop {
            let page = store.session_events(id, from, 5000).await?;
            let Some(last) = page.last() else { break };
            from = last.seq + 1;
            events += page
                .iter()
                .filter(|e| e.kind == "query" || e.kind == "execute")
                .count() as u64;
        }
    }
    let waited = Instant::now();
    let mut indexed = None;
    while waited.elapsed() < index_timeout {
        let mut complete = 0;
        let mut statements = 0;
        for chunk in ids.chunks(500) {
            for stats in store.session_stats(chunk).await?.values() {
                complete += usize::from(stats.complete);
                statements += stats.statements;
            }
        }
        if complete == ids.len() {
            indexed = Some(statements);
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(Recorded {
        sessions: ids.len(),
        events,
        indexed,
        index_wait: waited.elapsed(),
    })
}

// ---------------------------------------------------------------------------------------------
// The run

/// Sets PostgreSQL up for `backends` connections and creates the table of the mix.
fn prepare_postgres(backends: usize) -> Result<PgCluster> {
    let mut pg = PgCluster::start()?;
    pg.alter_system("max_connections", &backends.to_string())?;
    // Every backend maps shared memory: keep it small, the table fits.
    pg.alter_system("shared_buffers", "32MB")?;
    pg.restart()?;
    pg.psql(
        pg::APP_DB,
        &format!(
            "CREATE TABLE load_accounts (aid int PRIMARY KEY, abalance int NOT NULL DEFAULT 0, \
             filler char(84));\n\
             INSERT INTO load_accounts (aid, filler) SELECT g, '' FROM generate_series(1, {ACCOUNTS}) g;\n\
             GRANT SELECT, UPDATE ON load_accounts TO {user};\n\
             VACUUM ANALYZE load_accounts;",
            user = pg::SCRAM_USER
        ),
    )?;
    Ok(pg)
}

/// Index scans of the table's primary key so far: every statement of the mix makes exactly one,
/// so this is what PostgreSQL itself executed. Backends report their counts when they exit:
/// read until two reads a second apart agree.
fn pkey_scans(pg: &PgCluster) -> Result<u64> {
    let read = || -> Result<u64> {
        let out = pg.psql(
            pg::APP_DB,
            "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 'load_accounts_pkey'",
        )?;
        out.trim()
            .parse()
            .with_context(|| format!("idx_scan: {out}"))
    };
    let mut last = read()?;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = read()?;
        if now == last {
            return Ok(now);
        }
        last = now;
    }
}

/// What the clients and PostgreSQL saw, to compare with the recording.
struct Executed {
    /// Primary-key scans before the run, and statements run straight to PostgreSQL: what
    /// [`pkey_scans`] counts beyond the gateway's statements.
    scans_before: u64,
    direct: u64,
    counts: Arc<Counts>,
    sessions: usize,
}

impl Executed {
    /// PostgreSQL's count of the statements it ran through the gateway.
    fn by_postgres(&self, pg: &PgCluster) -> Result<u64> {
        Ok(pkey_scans(pg)? - self.scans_before - self.direct)
    }
}

/// Waits for the recording of every session and compares what it holds (Query and Execute
/// events, and the statement index) with what PostgreSQL executed through the gateway. Prints
/// and reports the counts; true when they are equal and no statement went unanswered.
async fn compare_counts(
    lab: &Lab,
    executed: &Executed,
    seconds: u64,
    report: &mut String,
) -> Result<bool> {
    let counts = &executed.counts;
    let (ok, server_errors) = (counts.ok(), counts.server_errors());
    let (refused, lost) = (counts.refused(), counts.lost());
    let store = lab.store().await?;
    let index_timeout = Duration::from_secs(seconds.max(120));
    let rec = recorded(store.as_ref(), executed.sessions, index_timeout).await?;
    // Every session has ended: their backends have exited and reported.
    let by_postgres = executed.by_postgres(&lab.pg)?;
    let index = match rec.indexed {
        Some(n) => format!(
            "{n} (caught up {:.0} s after the recording was complete)",
            rec.index_wait.as_secs_f64()
        ),
        None => format!(
            "not caught up {:.0} s after the recording",
            rec.index_wait.as_secs_f64()
        ),
    };
    // When the gateway ends a session (FATAL 57000) the statement in flight is recorded; it
    // may have run (the server's answer was held back) or not (the statement was).
    let unforwarded = rec.events.saturating_sub(by_postgres);
    let all_recorded = lost == 0
        && rec.events >= by_postgres
        && unforwarded <= refused
        && rec.indexed.is_none_or(|n| n == rec.events as i64);
    let equal = all_recorded && rec.events == by_postgres;
    let lines = [
        format!(
            "statements through the gateway, as clients saw them: {ok} ok, {server_errors} \
             errors from PostgreSQL, {refused} refused by the gateway (session ended, FATAL \
             57000), {lost} unanswered; {} sessions",
            rec.sessions
        ),
        format!("  executed by PostgreSQL (primary-key scans): {by_postgres}"),
        format!(
            "  recorded: {} Query and Execute events in the store, statement index {index}",
            rec.events
        ),
        format!(
            "recorded == executed: {}; every statement PostgreSQL executed is recorded: {}{}",
            if equal { "yes" } else { "NO" },
            if all_recorded { "yes" } else { "NO" },
            if unforwarded > 0 {
                format!(
                    " ({unforwarded} more recorded: in flight when the gateway ended \
                     {refused} sessions, never forwarded)"
                )
            } else {
                String::new()
            }
        ),
    ];
    for line in lines {
        println!("{line}");
        report.push_str(&line);
        report.push('\n');
    }
    Ok(equal)
}

fn kib(v: u64) -> String {
    format!("{:.1} MiB", v as f64 / 1024.0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let started_at = chrono::Utc::now();
    let n = args.connections;
    let busy = ((n as f64 * args.busy_fraction).round() as usize).min(n);
    let mut report = String::new();
    macro_rules! say {
        ($($arg:tt)*) => {{
            let line = format!($($arg)*);
            println!("{line}");
            report.push_str(&line);
            report.push('\n');
        }};
    }

    // Every gateway session holds a client and an upstream socket; margin for the store,
    // the console, the journal and the latency clients.
    let gateway_sessions = WARMUP_SESSIONS.max(n) + LATENCY_CLIENTS + 64;
    let (nofile_before, nofile) = raise_open_files(2 * gateway_sessions as u64 + 512)?;
    let backends = n + 2 * LATENCY_CLIENTS + 64;
    eprintln!("load-test: starting PostgreSQL (max_connections {backends})");
    let pg = prepare_postgres(backends)?;
    let scans_before = pkey_scans(&pg)?;
    let gateway_max = gateway_sessions.to_string();
    let lab = Lab::start_with(
        pg,
        &[("PGBASTION_GATEWAY_MAX_CONNECTIONS", gateway_max.as_str())],
    )?;
    lab.add_target(
        TARGET,
        pg::SCRAM_USER,
        "disable",
        &["--recording", &args.recording],
    )?;
    lab.grant(TARGET, pg::SCRAM_USER)?;
    let token = lab
        .issue(TARGET, pg::SCRAM_USER, &["--lifetime", "2h"])?
        .token;
    let gateway_str = lab.conn_str(TARGET, &token);
    let direct_str = format!(
        "host=127.0.0.1 port={} user={} password={} dbname={} sslmode=require",
        lab.pg.port(),
        pg::SCRAM_USER,
        PgCluster::password(pg::SCRAM_USER),
        pg::APP_DB
    );
    let gw = Proc {
        pid: lab.gateway.id(),
    };
    let counts = Arc::new(Counts::default());

    say!(
        "pgbastion load test, {} UTC: {n} TLS connections through one gateway ({busy} busy), \
         busy phase {} s, recording {}, SQLite store, console on",
        started_at.format("%Y-%m-%d %H:%M"),
        args.seconds,
        args.recording
    );
    say!(
        "settings: PostgreSQL max_connections={backends} shared_buffers=32MB; \
         gateway.max_connections={gateway_max}; open files (soft) {nofile_before} -> {nofile} \
         (gateway: {})",
        gw.open_files_limit()
    );
    say!(
        "machine: {} CPUs, load average at start {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );

    // Warm-up, then the baseline.
    for conn in open_many(&gateway_str, WARMUP_SESSIONS, 0, &counts).await? {
        conn.close().await;
    }
    tokio::time::sleep(SETTLE).await;
    let rss_empty = gw.status_kib("VmRSS")?;
    let anon_empty = gw.status_kib("RssAnon")?;

    eprintln!("load-test: opening {n} connections");
    let opening = Instant::now();
    let conns = open_many(&gateway_str, n, 10_000, &counts).await?;
    let opened_in = opening.elapsed();
    tokio::time::sleep(SETTLE).await;
    let rss_idle = gw.status_kib("VmRSS")?;
    let anon_idle = gw.status_kib("RssAnon")?;
    say!(
        "connect: {n} connections (TLS handshake, token check, upstream SCRAM login, one \
         statement) in {:.1} s, {:.0}/s",
        opened_in.as_secs_f64(),
        n as f64 / opened_in.as_secs_f64()
    );
    let per_conn = |with: u64, without: u64| with.saturating_sub(without) as f64 / n as f64;
    say!(
        "memory: gateway VmRSS {} with no client, {} with {n} idle -> {:.1} KiB per idle \
         connection (target <= 32 KiB); anonymous memory alone (RssAnon): {:.1} KiB",
        kib(rss_empty),
        kib(rss_idle),
        per_conn(rss_idle, rss_empty),
        per_conn(anon_idle, anon_empty)
    );

    // The busy phase.
    eprintln!("load-test: busy phase, {} s", args.seconds);
    let (stop_busy, busy_rx) = watch::channel(false);
    let (stop_idle, idle_rx) = watch::channel(false);
    let mut conns = conns;
    let idle_conns = conns.split_off(busy);
    let idle_count = idle_conns.len().max(1);
    let idle_tasks: Vec<_> = idle_conns
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let offset = IDLE_INTERVAL.mul_f64(i as f64 / idle_count as f64);
            tokio::spawn(idle_loop(c, offset, counts.clone(), idle_rx.clone()))
        })
        .collect();
    let ok_before = counts.ok();
    let cpu_before = gw.cpu_seconds()?;
    let phase = Instant::now();
    let busy_tasks: Vec<_> = conns
        .into_iter()
        .map(|c| tokio::spawn(busy_loop(c, counts.clone(), busy_rx.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let load_busy = load_average();
    stop_busy.send(true)?;
    let mut busy_us = Vec::new();
    let mut kept = Vec::new();
    for task in busy_tasks {
        let (conn, latencies) = task.await?;
        busy_us.extend(latencies);
        kept.push(conn);
    }
    let phase_secs = phase.elapsed().as_secs_f64();
    let cpu = gw.cpu_seconds()? - cpu_before;
    let statements = counts.ok() - ok_before;
    let rss_busy = gw.status_kib("VmRSS")?;
    say!(
        "busy phase: {statements} statements in {phase_secs:.1} s ({:.0}/s); gateway CPU \
         (utime+stime) {cpu:.1} s = {:.0}% of one core -> {:.1} µs per statement",
        statements as f64 / phase_secs,
        cpu / phase_secs * 100.0,
        cpu * 1e6 / statements.max(1) as f64
    );
    say!(
        "busy phase latency through the gateway ({busy} clients, saturated): {}",
        Latencies::new(busy_us).summary()
    );
    say!(
        "memory under load: VmRSS {} at the end of the busy phase, peak (VmHWM) {}; load \
         average at its end {load_busy}",
        kib(rss_busy),
        kib(gw.status_kib("VmHWM")?)
    );

    eprintln!("load-test: latency comparison, direct vs gateway");
    let (direct, through, direct_statements) =
        compare_latency(&direct_str, &gateway_str, &counts).await?;
    say!(
        "latency, {LATENCY_CLIENTS} clients per path, {LATENCY_ROUNDS} alternating rounds of \
         {} s, {} idle connections open:",
        LATENCY_SLICE.as_secs(),
        n - busy
    );
    say!("  direct (TLS):  {}", direct.summary());
    say!("  gateway (TLS): {}", through.summary());
    say!(
        "  added by the gateway: p50 {} µs, p99 {} µs",
        i64::from(through.percentile(0.5)) - i64::from(direct.percentile(0.5)),
        i64::from(through.percentile(0.99)) - i64::from(direct.percentile(0.99))
    );

    stop_idle.send(true)?;
    for task in idle_tasks {
        kept.push(task.await?);
    }
    eprintln!("load-test: closing {} connections", kept.len());
    stream::iter(kept)
        .for_each_concurrent(256, Conn::close)
        .await;

    eprintln!("load-test: waiting for the recording and the statement index");
    let executed = Executed {
        scans_before,
        direct: direct_statements,
        counts: counts.clone(),
        sessions: WARMUP_SESSIONS + n + LATENCY_CLIENTS,
    };
    let equal = if args.recording == "off" {
        say!(
            "statements: {} executed by PostgreSQL through the gateway; recording off: nothing \
             to compare",
            executed.by_postgres(&lab.pg)?
        );
        true
    } else {
        compare_counts(&lab, &executed, args.seconds, &mut report).await?
    };
    say!(
        "after the run: gateway VmRSS {}; load average {}",
        kib(gw.status_kib("VmRSS")?),
        load_average()
    );

    if let Some(dir) = args.results.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&args.results, &report)
        .with_context(|| format!("writing {}", args.results.display()))?;
    eprintln!("load-test: results in {}", args.results.display());
    ensure!(
        equal,
        "the recorded statements do not match the executed ones (see above)"
    );
    Ok(())
}
