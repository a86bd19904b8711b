//! The `pgbastion` command: the gateway (`serve`) and the admin commands that manage people,
//! targets, grants and tokens. The web console lives in the `web` library next to this file.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
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
