//! Running bpftrace beside pathcost: the tool an engineer would otherwise
//! reach for, used by `pathcost bench` as the yardstick and by the tests as
//! an independent instrument. One place knows how to start it attached and
//! stop it with its maps printed.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    process::{Child, ChildStdout, Command, Stdio},
    thread::JoinHandle,
};

use anyhow::{bail, Context as _, Result};

/// A running bpftrace script, attached: [`Bpftrace::start`] returns only
/// after the script's probes are in place.
pub struct Bpftrace {
    child: Child,
    stdout: BufReader<ChildStdout>,
    stderr: Option<JoinHandle<String>>,
}

/// Printed by the BEGIN block [`Bpftrace::start`] adds; bpftrace runs BEGIN
/// after it has attached every other probe.
const READY: &str = "pathcost: bpftrace attached";

impl Bpftrace {
    /// Starts `script` (bpftrace 0.17 syntax) and waits until it is attached.
    /// bpftrace wants tracefs mounted. Where it is not (the build host), it
    /// is mounted in a private mount namespace (`unshare -m`), so the
    /// machine's own mounts never change; where it is (the VM's init mounts
    /// it), a second mount would fail with EBUSY, so it is used as it is.
    pub fn start(script: &str) -> Result<Bpftrace> {
        let script = format!("BEGIN {{ printf(\"{READY}\\n\"); }}\n{script}");
        let mut child = Command::new("unshare")
            .args(["-m", "sh", "-c", "{ grep -q ' /sys/kernel/tracing tracefs ' /proc/self/mounts || mount -t tracefs nodev /sys/kernel/tracing; } && exec bpftrace -e \"$0\""])
            .arg(&script)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("failed to start bpftrace under unshare -m")?;
        let mut stderr = child.stderr.take().context("bpftrace's stderr is not piped")?;
        // A thread drains stderr so a chatty bpftrace can never block on a full pipe.
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            stderr.read_to_string(&mut text).ok();
            text
        });
        let stdout = BufReader::new(child.stdout.take().context("bpftrace's stdout is not piped")?);
        let mut bpftrace = Bpftrace { stdout, child, stderr: Some(stderr) };
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            if bpftrace.stdout.read_line(&mut line).context("reading bpftrace's stdout")? == 0 {
                let status = bpftrace.child.wait().context("waiting for bpftrace")?;
                let stderr = bpftrace.stderr.take().and_then(|t| t.join().ok()).unwrap_or_default();
                bail!("bpftrace exited ({status}) before attaching:\n{seen}{stderr}\nscript:\n{script}");
            }
            if line.trim_end() == READY {
                return Ok(bpftrace);
            }
            seen.push_str(&line);
        }
    }

    /// Detaches and returns everything bpftrace printed after attaching,
    /// including the maps it prints on exit.
    pub fn stop(mut self) -> Result<String> {
        let pid = libc::pid_t::try_from(self.child.id()).context("pid does not fit pid_t")?;
        // SAFETY: kill(2) only sends a signal; `pid` is our own child, not yet
        // waited for, so it cannot have been reused. SIGINT makes bpftrace
        // print its maps and exit.
        if unsafe { libc::kill(pid, libc::SIGINT) } != 0 {
            bail!("SIGINT to bpftrace: {}", std::io::Error::last_os_error());
        }
        let mut out = String::new();
        self.stdout.read_to_string(&mut out).context("reading bpftrace's stdout")?;
        let status = self.child.wait().context("waiting for bpftrace")?;
        let stderr = self.stderr.take().and_then(|t| t.join().ok()).unwrap_or_default();
        if !status.success() {
            bail!("bpftrace exited with {status}:\n{out}{stderr}");
        }
        Ok(out)
    }
}

impl Drop for Bpftrace {
    /// A caller that fails half-way must not leave bpftrace attached.
    fn drop(&mut self) {
        if self.stderr.is_some() {
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}

/// Calls recorded in every `hist()` map bpftrace printed: the sum of the
/// bucket lines (`[1K, 2K)   123 |@@@@  |`).
pub fn hist_total(output: &str) -> u64 {
    output
        .lines()
        .filter(|l| l.starts_with('['))
        .filter_map(|l| l.split(')').nth(1).or_else(|| l.split(']').nth(1)))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// What a user would write to time calls of `symbols` with kprobe/kretprobe
/// pairs: a per-CPU depth stack (these functions run in softirq on top of
/// whatever the CPU was doing, and nest), a start time per frame and one
/// `hist()` per function. An exit with an empty stack (a call already
/// running at attach time) is ignored.
pub fn timed_calls_hist(symbols: &[&str]) -> String {
    let list = |kind: &str| symbols.iter().map(|s| format!("{kind}:{s}")).collect::<Vec<_>>().join(", ");
    format!(
        r#"
{entries}
{{
  $d = @depth[cpu];
  @depth[cpu] = $d + 1;
  @start[cpu, $d] = nsecs;
}}
{exits}
/@depth[cpu] > 0/
{{
  $end = nsecs;
  $d = @depth[cpu] - 1;
  @depth[cpu] = $d;
  @ns[probe] = hist($end - @start[cpu, $d]);
  delete(@start[cpu, $d]);
}}
END {{ clear(@depth); clear(@start); }}
"#,
        entries = list("kprobe"),
        exits = list("kretprobe"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hist_lines_are_summed() {
        let out = "@ns[kretprobe:ipt_do_table]:\n[2K, 4K)    7 |@@@@ |\n[4K, 8K)   12 |@@@@@@@@|\n\n@ns[kretprobe:nf_hook_slow]:\n[16K, 32K)  3 |@|\n";
        assert_eq!(hist_total(out), 22);
        assert!(timed_calls_hist(&["a", "b"]).contains("kprobe:a, kprobe:b"));
    }
}
