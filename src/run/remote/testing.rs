//! The shell the remote jobs' tests run under: `sh`, unless `BOUNCE_TEST_SH` names another
//! (`dash`, `busybox sh`: the tests run again under each, see `remote/tests.rs`).

use std::process::{Command, Output};

/// The words that start the shell under test.
pub fn shell() -> Vec<String> {
    let named = std::env::var("BOUNCE_TEST_SH").unwrap_or_default();
    let words: Vec<String> = named.split_whitespace().map(String::from).collect();
    let mut words = if words.is_empty() {
        vec!["sh".to_string()]
    } else {
        words
    };
    // By its path, so that a test that empties PATH still finds it.
    words[0] = shell_path(&words[0]);
    words
}

/// `name` as a path found on this process's PATH (itself when it holds a `/` or is not found).
pub fn shell_path(name: &str) -> String {
    if name.contains('/') {
        return name.to_string();
    }
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
        .map_or_else(|| name.to_string(), |p| p.display().to_string())
}

/// The shell's words, then `-c` and the program of `code` (see [`super::program`]).
pub fn argv(code: &str) -> Vec<String> {
    let mut v = shell();
    v.push("-c".into());
    v.push(super::program(code));
    v
}

/// A command that runs `code` under the shell under test.
pub fn command(code: &str) -> Command {
    let v = argv(code);
    let mut c = Command::new(&v[0]);
    c.args(&v[1..]);
    c
}

/// Runs `code` under the shell under test, to its end.
pub fn sh(code: &str) -> Output {
    command(code).output().expect("the shell under test starts")
}
