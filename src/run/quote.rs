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

#[cfg(test)]
mod tests {
    use super::shell_quote;
    use std::process::Command;

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
