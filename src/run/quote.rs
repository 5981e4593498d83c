//! Quoting of every string that reaches a remote POSIX shell.

/// Quotes `s` as one word for a POSIX shell: wrapped in single quotes, with every `'` written
/// as `'\''`. Inside single quotes no character is special, so spaces, `"`, `$()`, backticks,
/// `;`, `&` and newlines all arrive unchanged.
pub fn shell_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Quotes `s` as one word on one line, for a log a person pastes into an interactive shell:
/// [`shell_quote`]'s form when `s` has no control character, else `$'…'` (bash, zsh, ksh,
/// BusyBox ash; POSIX since 2024), with `\\`, `\'`, `\n` and `\xHH` escapes.
pub fn one_line_quote(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return shell_quote(s);
    }
    let mut out = String::with_capacity(s.len() + 3);
    out.push_str("$'");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::{one_line_quote, shell_quote};
    use std::process::Command;

    #[test]
    fn a_one_line_quote_is_one_line_and_survives_bash_unchanged() {
        for s in [
            "plain",
            "it's",
            "two\nlines 'q' \\ $(x) `y`\t\x01 é",
            "a\\'b\n",
        ] {
            let q = one_line_quote(s);
            assert!(!q.contains('\n'), "{q}");
            let out = Command::new("bash")
                .arg("-c")
                .arg(format!("printf %s {q}"))
                .output()
                .unwrap();
            assert!(out.status.success(), "{q}");
            assert_eq!(String::from_utf8(out.stdout).unwrap(), s, "{q}");
        }
    }

    /// Runs `printf %s <quoted>` through a real `sh` and returns what it printed.
    fn round_trip(s: &str) -> String {
        let script = format!("printf %s {}", shell_quote(s));
        let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
        assert!(out.status.success(), "sh failed on {script:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn hostile_strings_survive_a_real_shell_unchanged() {
        for s in [
            "plain",
            "with space",
            "it's",
            "''",
            "\"double\"",
            "$(touch /tmp/bounce-pwned)",
            "`touch /tmp/bounce-pwned`",
            "a; rm -rf /tmp/x",
            "a && b & c",
            "line1\nline2",
            "$HOME ${PATH} \\ * ? [a] ~ # !",
            "-rf",
            "",
        ] {
            assert_eq!(round_trip(s), s);
        }
    }

    #[test]
    fn nested_quoting_survives_two_shells() {
        let inner = "it's $(x) `y`; z & w";
        let cmd = format!(
            "sh -c {}",
            shell_quote(&format!("printf %s {}", shell_quote(inner)))
        );
        let out = Command::new("sh").arg("-c").arg(&cmd).output().unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), inner);
    }

    #[test]
    fn single_quote_is_closed_escaped_and_reopened() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
        assert_eq!(shell_quote(""), "''");
    }
}
