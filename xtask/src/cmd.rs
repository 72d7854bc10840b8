//! Running external commands with errors that say what was run.
//!
//! Every failure names the command line and its exit status; when the command's
//! stderr was captured, it is shown between markers so it stands out from ours.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context as _, Result};

/// The command line as a user could paste it, with the environment overrides we set.
pub fn describe(cmd: &Command) -> String {
    let mut line = String::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            let _ = write!(line, "{}={} ", key.to_string_lossy(), shell_quote(value));
        }
    }
    line.push_str(&shell_quote(cmd.get_program()));
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&shell_quote(arg));
    }
    line
}

/// Quotes one word for a POSIX shell; plain words stay as they are so messages read well.
pub fn shell_quote(word: impl AsRef<OsStr>) -> String {
    let word = word.as_ref().to_string_lossy();
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Runs with inherited stdio (the user sees its output live) and fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("failed to start `{}`", describe(cmd)))?;
    if !status.success() {
        bail!("`{}` failed: {status}", describe(cmd));
    }
    Ok(())
}

/// Runs capturing stdout and stderr; returns stdout, and on failure shows stderr.
pub fn stdout(cmd: &mut Command) -> Result<String> {
    let bytes = stdout_bytes(cmd)?;
    String::from_utf8(bytes)
        .with_context(|| format!("`{}` printed something that is not UTF-8", describe(cmd)))
}

/// Like [`stdout`] for binary output (a decompressed file).
pub fn stdout_bytes(cmd: &mut Command) -> Result<Vec<u8>> {
    let output = output(cmd)?;
    check(cmd, &output)?;
    Ok(output.stdout)
}

/// Runs capturing both streams without judging the exit status (for probes such as
/// `dpkg-query`, whose failure just means "not there").
pub fn output(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to start `{}`", describe(cmd)))
}

/// Turns a captured non-zero exit into an error carrying the command's stderr.
pub fn check(cmd: &Command, output: &Output) -> Result<()> {
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    bail!(
        "`{}` failed: {}\n----- stderr -----\n{}\n----- end of stderr -----",
        describe(cmd),
        output.status,
        stderr.trim_end()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("smoke"), "smoke");
        assert_eq!(
            shell_quote("--output=target/report"),
            "--output=target/report"
        );
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's $HOME"), r"'it'\''s $HOME'");
    }

    #[test]
    fn failure_shows_command_status_and_stderr() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo oops >&2; exit 3"]);
        let err = stdout(&mut cmd).unwrap_err().to_string();
        assert!(
            err.contains("`sh -c 'echo oops >&2; exit 3'` failed"),
            "{err}"
        );
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(
            err.contains("----- stderr -----\noops\n----- end of stderr -----"),
            "{err}"
        );
    }
}
