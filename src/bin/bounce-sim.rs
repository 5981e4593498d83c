//! `bounce-sim`: simulate distributing one file to many hosts, and draw the figure. The flags
//! and what they do live in [`bounce::sim::cli`]; this only parses, calls and reports errors.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use bounce::sim::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's own message spans several lines; keep the line that names the flag.
            let text = e.render().to_string();
            let line = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("bounce-sim: {}", line.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    if let Some(what) = cli.generate {
        if let Err(e) = bounce::cli_docs::print(what, Cli::command()) {
            eprintln!("bounce-sim: writing to stdout: {e}");
            return ExitCode::from(1);
        }
        return ExitCode::SUCCESS;
    }
    match cli::run(cli, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away (`| head`) is no error of ours: the files are written.
        Err(cli::CliError::Stdout(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bounce-sim: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
