//! Longer fuzzing runs of the gateway's decoders (`harness::fuzz`): `scripts/fuzz`.
//!
//!   cargo run --release -p pgbastion-tests --example fuzz -- --seconds 600 [--target session] [--seed N]
//!   cargo run --release -p pgbastion-tests --example fuzz -- --replay target/fuzz-findings/X.bin

use std::time::Duration;

use anyhow::{Context, Result, bail};
use harness::fuzz::{Target, fuzz};

fn main() -> Result<()> {
    let mut seconds = 60u64;
    let mut targets = Target::ALL.to_vec();
    let mut seed = 1u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--seconds" => seconds = value()?.parse().context("--seconds")?,
            "--seed" => seed = value()?.parse().context("--seed")?,
            "--target" => {
                let name = value()?;
                targets = vec![Target::by_name(&name).with_context(|| {
                    format!("no target {name}; startup, client, server or session")
                })?];
            }
            "--replay" => {
                let path = value()?;
                let name = std::path::Path::new(&path)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.split('-').next())
                    .context("a finding is named TARGET-SEED-ITERATION.bin")?;
                let target = Target::by_name(name).context("unknown target in the file name")?;
                let input = std::fs::read(&path)?;
                target.run(&input);
                println!("{path}: no panic");
                return Ok(());
            }
            other => bail!("unknown argument {other}"),
        }
    }
    let per_target = Duration::from_secs(seconds) / targets.len() as u32;
    let mut total = 0;
    let mut findings = Vec::new();
    for target in targets {
        // Seeds move on each round so that a long run does not repeat itself.
        let mut round = 0;
        let deadline = std::time::Instant::now() + per_target;
        while std::time::Instant::now() < deadline {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let report = fuzz(
                target,
                seed.wrapping_add(round),
                u64::MAX,
                left.min(Duration::from_secs(30)),
            );
            total += report.executions;
            findings.extend(report.findings);
            round += 1;
        }
        println!("{}: done ({round} rounds)", target.name());
    }
    println!("{total} inputs in {seconds} s; {} findings", findings.len());
    for f in &findings {
        println!("  {}", f.display());
    }
    if !findings.is_empty() {
        bail!("decoders panicked");
    }
    Ok(())
}
