//! `bounce-run`: push one file from this machine to many hosts over OpenSSH. The options
//! live in [`bounce::run::cli`] and the session they drive in [`bounce::run::session`]; this
//! only parses, calls and reports.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use bounce::run::cli::{host_sources, Cli};

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    if let Some(&what) = matches.get_one::<bounce::cli_docs::Generate>("generate") {
        if let Err(e) = bounce::cli_docs::print(what, Cli::command()) {
            eprintln!("bounce-run: writing to stdout: {e}");
            return ExitCode::from(1);
        }
        return ExitCode::SUCCESS;
    }
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let sources = host_sources(&matches, &cli);
    match bounce::run::session::run(cli, &sources) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            for line in e.lines() {
                eprintln!("bounce-run: {line}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}
