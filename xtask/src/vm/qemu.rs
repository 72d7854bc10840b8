//! Booting one kernel under qemu and judging the run from its serial console.
//!
//! The console is streamed to our stdout as it arrives (prefixed with the kernel
//! tag) and scanned for init's verdict line and for kernel failure markers; a run
//! that outlives its timeout is killed.

use std::fmt;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::cmd;

/// What one VM run came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// init reported a failure, or the VM ended without a verdict.
    Failure(String),
    /// The kernel panicked, oopsed or locked up; the console line that said so.
    Panic(String),
    Timeout(Duration),
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        *self == Self::Success
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Success => f.write_str("success"),
            Self::Failure(why) => write!(f, "failure: {why}"),
            Self::Panic(line) => write!(f, "kernel failure: {line}"),
            Self::Timeout(after) => write!(f, "timed out after {} s", after.as_secs()),
        }
    }
}

pub struct BootReport {
    pub outcome: Outcome,
    /// From qemu's start to init's first line: the cost of booting under TCG.
    pub init_reached: Option<Duration>,
    pub wall: Duration,
}

pub struct Boot<'a> {
    /// Printed before every console line, e.g. `6.1`.
    pub tag: &'a str,
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
    /// Shared read-write over 9p and mounted at the same path in the guest.
    pub workspace: &'a Path,
    pub timeout: Duration,
}

/// How long to wait for qemu to exit after init's verdict (power-off is quick;
/// this only guards against a VM that hangs on the way down).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);

/// What a console line tells us.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    InitStarted,
    /// A job's own account of what failed (`job: failed: ...`), kept for the verdict.
    JobFailed(String),
    Success,
    Failure(String),
    KernelFailure,
}

/// Substrings the kernel prints when it can no longer be trusted.
const KERNEL_FAILURE_MARKERS: &[&str] = &[
    "Kernel panic",
    "BUG: soft lockup",
    "watchdog: BUG",
    "Oops: ",
    "BUG: kernel NULL pointer",
    "BUG: unable to handle",
];

fn classify(line: &str) -> Option<Event> {
    // init's lines are only trusted at the start of a line; kernel messages carry
    // a timestamp prefix, so they are matched anywhere.
    if let Some(rest) = line.strip_prefix("init: ") {
        if rest == "success" {
            return Some(Event::Success);
        }
        if let Some(why) = rest.strip_prefix("failure") {
            let why = why.trim().trim_start_matches('(').trim_end_matches(')');
            return Some(Event::Failure(why.to_owned()));
        }
        if rest.starts_with("started") {
            return Some(Event::InitStarted);
        }
    }
    if let Some(what) = line.strip_prefix("job: failed:") {
        return Some(Event::JobFailed(what.trim().to_owned()));
    }
    KERNEL_FAILURE_MARKERS
        .iter()
        .any(|marker| line.contains(marker))
        .then_some(Event::KernelFailure)
}

pub fn boot(boot: &Boot<'_>) -> Result<BootReport> {
    let workspace = boot
        .workspace
        .to_str()
        .context("the workspace path is not UTF-8")?;
    // Both the kernel command line and qemu's -virtfs option split on these.
    if workspace.contains(|c: char| c.is_whitespace() || c == ',') {
        bail!("the workspace path {workspace:?} contains a space or comma, which the VM's kernel command line and qemu's -virtfs cannot carry");
    }
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
        // TCG, never KVM: this machine's /dev/kvm is a paravirtual nested hypervisor
        // (kvm-pvm) that only runs guest kernels built for it, and a Debian kernel
        // hangs right after decompression there (shared/ENVIRONMENT.md).
        "-accel",
        "tcg",
        "-cpu",
        "max",
        // The initramfs (about 230 MB with bpftrace's libraries) stays in RAM as
        // the root file system, and while the kernel unpacks it the archive is in
        // memory twice; 2 GiB keeps the ~1.3 GB the suite had before for its
        // namespaces, rulesets and conntrack tables.
        "-m",
        "2048",
        "-smp",
        "2",
        "-nographic",
        // panic=-1 makes a panicking guest reboot at once; -no-reboot turns that into
        // qemu exiting, so a panic ends the run instead of hanging it.
        "-no-reboot",
        // No network card: guest traffic stays between its own namespaces, and this
        // also skips the iPXE option ROM's boot delay.
        "-nic",
        "none",
    ])
    .arg("-kernel")
    .arg(boot.vmlinuz)
    .arg("-initrd")
    .arg(boot.initrd)
    .arg("-append")
    .arg(format!(
        "console=ttyS0 panic=-1 quiet pathcost.workspace={workspace}"
    ))
    .arg("-virtfs")
    .arg(format!(
        "local,path={workspace},mount_tag=workspace,security_model=none,id=ws"
    ))
    // No stdin: -nographic would otherwise put our terminal into raw mode.
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());

    println!("[{}] {}", boot.tag, cmd::describe(&qemu));
    let started = Instant::now();
    let mut child = qemu
        .spawn()
        .with_context(|| format!("failed to start `{}`", cmd::describe(&qemu)))?;
    let lines = console_lines(&mut child)?;

    let mut verdict: Option<Outcome> = None;
    let mut kernel_failure: Option<String> = None;
    let mut init_reached = None;
    let mut job_failed = None;
    let mut deadline = started + boot.timeout;
    let mut timed_out = false;
    loop {
        let now = Instant::now();
        let Some(left) = deadline.checked_duration_since(now) else {
            timed_out = true;
            break;
        };
        let line = match lines.recv_timeout(left) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
            // qemu closed its stdout: it is exiting.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        println!("[{}] {line}", boot.tag);
        match classify(&line) {
            Some(Event::InitStarted) => {
                init_reached.get_or_insert(started.elapsed());
            }
            Some(Event::Success) => {
                verdict.get_or_insert(Outcome::Success);
                deadline = deadline.min(Instant::now() + SHUTDOWN_GRACE);
            }
            Some(Event::JobFailed(what)) => job_failed = Some(what),
            Some(Event::Failure(why)) => {
                let why = match &job_failed {
                    Some(what) => format!("{why}; failed: {what}"),
                    None => why,
                };
                verdict.get_or_insert(Outcome::Failure(why));
                deadline = deadline.min(Instant::now() + SHUTDOWN_GRACE);
            }
            Some(Event::KernelFailure) => {
                kernel_failure.get_or_insert(line);
            }
            None => {}
        }
    }
    if timed_out {
        // Killing an already-exited child is harmless; the error is not interesting.
        child.kill().ok();
    }
    let status = child.wait().context("failed to wait for qemu")?;
    let wall = started.elapsed();
    if timed_out && verdict.is_some() {
        eprintln!(
            "[{}] qemu did not exit after init's verdict; killed it",
            boot.tag
        );
    }

    // A kernel failure taints whatever init said afterwards.
    let outcome = match (kernel_failure, verdict) {
        (Some(line), _) => Outcome::Panic(line),
        (None, Some(verdict)) => verdict,
        (None, None) if timed_out => Outcome::Timeout(boot.timeout),
        (None, None) => Outcome::Failure(format!("qemu exited ({status}) before init reported")),
    };
    Ok(BootReport {
        outcome,
        init_reached,
        wall,
    })
}

/// Console lines from a reader thread, so the main loop can wait with a timeout.
/// The serial console ends lines with CR LF and may carry non-UTF-8 bytes.
fn console_lines(child: &mut Child) -> Result<mpsc::Receiver<String>> {
    let stdout = child
        .stdout
        .take()
        .context("qemu's stdout was not captured")?;
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut buffer = Vec::new();
        loop {
            buffer.clear();
            match reader.read_until(b'\n', &mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buffer);
                    let line = strip_escapes(line.trim_end_matches(['\r', '\n']));
                    if sender.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    Ok(receiver)
}

/// Drops terminal escape sequences (SeaBIOS clears the screen, which would glue
/// `ESC c ESC [2J` onto init's first line) and stray carriage returns.
fn strip_escapes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.next() == Some('[') {
                    // CSI: parameter bytes, then one final byte in `@`..=`~`.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // Otherwise a two-character sequence such as `ESC c`, now consumed.
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_stripped() {
        assert_eq!(
            strip_escapes("\x1bc\x1b[?7l\x1b[2Jinit: started on 6.1.0-56-amd64\r"),
            "init: started on 6.1.0-56-amd64"
        );
        assert_eq!(strip_escapes("\x1b[0mSeaBIOS"), "SeaBIOS");
    }

    #[test]
    fn console_lines_are_classified() {
        assert_eq!(classify("init: success"), Some(Event::Success));
        assert_eq!(
            classify("init: failure (status 1)"),
            Some(Event::Failure("status 1".into()))
        );
        assert_eq!(
            classify("init: started on 6.1.0-56-amd64"),
            Some(Event::InitStarted)
        );
        assert_eq!(classify("test says init: success"), None);
        assert_eq!(
            classify("job: failed: smoke probes"),
            Some(Event::JobFailed("smoke probes".into()))
        );
        assert_eq!(
            classify("[   12.3] Kernel panic - not syncing: Attempted to kill init!"),
            Some(Event::KernelFailure)
        );
        assert_eq!(
            classify("[   40.1] watchdog: BUG: soft lockup - CPU#0 stuck for 22s!"),
            Some(Event::KernelFailure)
        );
        assert_eq!(classify("init: modules: 80 loaded, none failed"), None);
    }
}
