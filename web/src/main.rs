//! The `pgbastion` command: the gateway (`serve`) and the admin commands that manage people,
//! targets, grants and tokens. The web console lives in the `web` library next to this file.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        // `--help` and `--version` go to stdout and succeed.
        Err(e) if !e.use_stderr() => e.exit(),
        // Usage mistakes fail like every other error: exit code 1, not clap's 2.
        Err(e) => {
            let _ = e.print();
            return ExitCode::FAILURE;
        }
    };
    let config = match gateway::config::Config::load(args.config.as_deref(), std::env::vars()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("pgbastion: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if config.gateway.worker_threads > 0 {
        builder.worker_threads(config.gateway.worker_threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("pgbastion: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(args, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole chain on one line: "what failed: why".
            eprintln!("pgbastion: {e:#}");
            ExitCode::FAILURE
        }
    }
}
