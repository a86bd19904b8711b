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
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("pgbastion: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole chain on one line: "what failed: why".
            eprintln!("pgbastion: {e:#}");
            ExitCode::FAILURE
        }
    }
}
