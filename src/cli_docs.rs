//! Shell completions and man pages, generated from a binary's clap definition: what
//! `--generate` prints for `bounce-sim` and `bounce-run`.

use std::io::Write;

/// What `--generate` can print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Generate {
    /// Completions for bash.
    Bash,
    /// Completions for zsh.
    Zsh,
    /// Completions for fish.
    Fish,
    /// Completions for elvish.
    Elvish,
    /// Completions for PowerShell.
    Powershell,
    /// The man page, in roff.
    Man,
}

/// Writes `what` for the command `cmd` (a binary's `Cli::command()`) to `out`.
pub fn generate(
    what: Generate,
    mut cmd: clap::Command,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    use clap_complete::Shell;
    let name = cmd.get_name().to_string();
    let shell = match what {
        Generate::Bash => Shell::Bash,
        Generate::Zsh => Shell::Zsh,
        Generate::Fish => Shell::Fish,
        Generate::Elvish => Shell::Elvish,
        Generate::Powershell => Shell::PowerShell,
        Generate::Man => return clap_mangen::Man::new(cmd).render(out),
    };
    clap_complete::generate(shell, &mut cmd, name, out);
    Ok(())
}

/// Writes `what` for `cmd` to stdout. A reader that stops early (a pager, `head`) is not an
/// error.
pub fn print(what: Generate, cmd: clap::Command) -> std::io::Result<()> {
    match generate(what, cmd, &mut std::io::stdout().lock()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}
