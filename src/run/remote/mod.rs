//! The jobs the runner runs on the hosts: one module per job, each owning its shell body
//! (a `.sh` file of this folder), the arguments it takes, what it prints and its exit
//! statuses. Nothing here does I/O.
//!
//! The contract between a module and its shell:
//!
//! - a `.sh` file only defines functions named `bounce_…`, which take every value as a
//!   positional parameter: no value is ever spliced into shell code, so no brace needs
//!   doubling and a hostile path or host name stays one word;
//! - a module's Rust functions return *code*: calls of those functions, every argument
//!   quoted ([`Call`]), joined by the shell's `;`, `&&` and `||` where a job is several;
//! - [`program`] turns code into what a host runs: the definitions of exactly the
//!   functions it calls, then the code. [`sh_c`] wraps that for `sh -c`, whatever the
//!   login shell.
//!
//! What the jobs promise about files (the README's "Failure behaviour" repeats it):
//!
//! - temporary files sit beside DEST as `.NAME.bounce-RUNID….tmp` ([`names`]), RUNID random
//!   per run; each is created exclusively (`dd conv=excl`, `O_EXCL`), mode 0600, and a
//!   symlink, FIFO or anything else already at its name is refused;
//! - DEST itself is only ever replaced by `mv -T` (one `rename(2)`): a directory at DEST is
//!   refused, and a symlink at DEST is replaced by the file, never written through;
//! - a copy is flushed (`sync FILE`) before that rename and the directory after it, unless
//!   the run says otherwise, so a power loss leaves the old DEST or the verified new one.
//!
//! Every job that moves data prints `echo $$` before any data flows: sshd puts each command
//! in a session of its own, so that pid is also the process group the runner kills
//! (`kill -TERM -PID`) to stop a job's whole pipeline on that host.
//!
//! The bodies need only `sh`, GNU coreutils, `find` and, for hops that start on a host, an
//! `ssh` client there; trees need GNU tar too. Tests run every body under the system `sh`,
//! `dash` and BusyBox `sh` (`remote/tests.rs`), and `shellcheck -s sh` over the library.

pub mod cleanup;
pub mod fence;
pub mod hop;
pub mod install;
pub mod lock;
pub mod names;
pub mod probe;
pub mod receive;
pub mod relay;
pub mod sweep;
pub mod tree;
pub mod whole;

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

pub use super::codec::Codec;
pub use cleanup::cleanup;
pub use fence::{create_fence, cut_fence, pass_fence};
pub use hop::{pace, HopSsh, PACE_PERIOD_MS, PREFERRED_CIPHERS};
pub use install::{
    check, finalize, finalize_decoded, install, parse_then, then, verify, verify_decoded, Meta,
    Preserve, DIGEST_MISMATCH_STATUS, THEN_STATUS_MARK, THEN_TAIL_BYTES, THEN_TAIL_LINES,
};
pub use names::{decoded_path, old_tree_path, parent, stage_path, temp_path};
pub use probe::{
    probe, Hasher, DEST_IS_DIRECTORY_STATUS, DEST_NOT_A_FILE_STATUS, TOOLS_LACKING_STATUS,
    TOOL_MISSING_STATUS,
};
pub use receive::{
    copy_length, create_for_parts, part_receive, receive_chunks, stream_receive,
    stream_receive_unpacking, stream_resume, Decode,
};
pub use relay::{chunk_reader, send_chunks, stream_relay, RelayFrom, RELAY_POLL_MS, RELAY_WAIT_S};
pub use sweep::STALE_TEMP_MINUTES;
pub use whole::{send_parts, send_whole, SendFrom};

use super::quote::shell_quote;
use std::collections::BTreeSet;
use std::sync::OnceLock;

/// The library: every `.sh` file of this folder.
const LIBRARY: [&str; 11] = [
    include_str!("fragments.sh"),
    include_str!("hop.sh"),
    include_str!("probe.sh"),
    include_str!("sweep.sh"),
    include_str!("lock.sh"),
    include_str!("fence.sh"),
    include_str!("receive.sh"),
    include_str!("whole.sh"),
    include_str!("relay.sh"),
    include_str!("install.sh"),
    include_str!("cleanup.sh"),
];

/// [`LIBRARY`] and the tree's body, which `tree.rs` owns.
fn library() -> impl Iterator<Item = &'static str> {
    LIBRARY.into_iter().chain([tree::BODY])
}

/// One function of the library, as it is sent: its definition with comments and
/// indentation left out, and the library functions it calls.
struct Function {
    name: &'static str,
    text: String,
    calls: Vec<String>,
}

/// The library's functions, read once.
fn functions() -> &'static [Function] {
    static FUNCTIONS: OnceLock<Vec<Function>> = OnceLock::new();
    FUNCTIONS.get_or_init(|| {
        let mut out = Vec::new();
        for file in library() {
            let mut current: Option<(&'static str, String)> = None;
            for line in file.lines() {
                let t = line.trim();
                if current.is_none() {
                    if let Some(name) = t.strip_suffix("() {") {
                        current = Some((name, format!("{t}\n")));
                    }
                    continue;
                }
                if t.is_empty() || t.starts_with('#') {
                    continue;
                }
                let (name, text) = current.as_mut().expect("inside a function");
                text.push_str(t);
                text.push('\n');
                if line == "}" {
                    let calls = called(text).into_iter().filter(|c| c != name).collect();
                    out.push(Function {
                        name,
                        text: std::mem::take(text),
                        calls,
                    });
                    current = None;
                }
            }
            assert!(current.is_none(), "a function of the library is not closed");
        }
        out
    })
}

/// The library functions `code` calls: `bounce_…` words outside single quotes (a quoted
/// argument, a nested program for another host among them, calls nothing here).
fn called(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut quoted = false;
    let mut chars = code.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' => quoted = !quoted,
            '\\' if !quoted => {
                chars.next();
            }
            'b' if !quoted && code[i..].starts_with("bounce_") => {
                let starts_word = code[..i]
                    .chars()
                    .next_back()
                    .is_none_or(|p| !(p.is_ascii_alphanumeric() || p == '_'));
                let end = code[i..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map_or(code.len(), |n| i + n);
                if starts_word {
                    names.insert(code[i..end].to_string());
                }
                while chars.peek().is_some_and(|(j, _)| *j < end) {
                    chars.next();
                }
            }
            _ => {}
        }
    }
    names
}

/// What a host runs for `code`: the definitions of the library functions it calls (and of
/// those they call), then `code`.
pub fn program(code: &str) -> String {
    let all = functions();
    let mut needed: BTreeSet<String> = BTreeSet::new();
    let mut todo: Vec<String> = called(code).into_iter().collect();
    while let Some(name) = todo.pop() {
        if let Some(f) = all.iter().find(|f| f.name == name) {
            if needed.insert(name) {
                todo.extend(f.calls.iter().cloned());
            }
        }
    }
    let mut out = String::new();
    for f in all.iter().filter(|f| needed.contains(f.name)) {
        out.push_str(&f.text);
    }
    out.push_str(code);
    out
}

/// `sh -c PROGRAM` for `code` (see [`program`]), so that it runs under `sh` whatever the
/// login shell is.
pub fn sh_c(code: &str) -> String {
    format!("sh -c {}", shell_quote(&program(code)))
}

/// A call of a library function, each argument quoted as one word.
#[derive(Clone, Debug)]
pub struct Call(String);

impl Call {
    /// A call of `function`, with no arguments yet.
    pub fn new(function: &str) -> Call {
        Call(function.to_string())
    }

    /// The next argument.
    pub fn arg(mut self, value: impl AsRef<str>) -> Call {
        self.0.push(' ');
        self.0.push_str(&shell_quote(value.as_ref()));
        self
    }

    /// The next arguments.
    pub fn args<I, S>(self, values: I) -> Call
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        values.into_iter().fold(self, Call::arg)
    }

    /// `yes` or `no`, as the bodies read a flag.
    pub fn flag(self, on: bool) -> Call {
        self.arg(if on { "yes" } else { "no" })
    }

    /// The code.
    pub fn code(self) -> String {
        self.0
    }
}
