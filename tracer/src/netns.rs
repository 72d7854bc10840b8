//! Private network namespaces whose lifetime is bound to this process.
//!
//! Each namespace belongs to one dedicated thread that `unshare`s it: no
//! bind mount under /run/netns is made, so when the process exits for any
//! reason (SIGKILL included) the kernel frees the namespace together with
//! every link, rule, set and IPVS service inside it. Commands spawned from
//! that thread, and sockets it creates, live in the namespace; the root
//! namespace is never touched.

use std::{
    process::Command,
    sync::mpsc,
    thread,
};

use anyhow::{anyhow, bail, Context as _, Result};

type Job = Box<dyn FnOnce() + Send>;

/// A network namespace served by its own thread.
pub struct NetNs {
    name: String,
    /// Thread id of the namespace's thread: `ip link ... netns TID` moves a
    /// link into this namespace (the kernel resolves thread ids as well).
    tid: i32,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl NetNs {
    /// Creates the namespace and brings its loopback up.
    pub fn new(name: &str) -> Result<NetNs> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<i32, String>>();
        let thread = thread::Builder::new()
            .name(format!("netns-{name}"))
            .spawn(move || {
                // SAFETY: unshare only changes this thread's namespace.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    let err = std::io::Error::last_os_error();
                    let _ = ready_tx.send(Err(format!("unshare(CLONE_NEWNET) failed: {err}")));
                    return;
                }
                // SAFETY: gettid cannot fail.
                let tid = unsafe { libc::gettid() };
                let _ = ready_tx.send(Ok(tid));
                for job in inbox {
                    job();
                }
            })
            .context("failed to spawn a namespace thread")?;
        let tid = ready_rx
            .recv()
            .map_err(|_| anyhow!("namespace thread for {name} died"))?
            .map_err(|e| anyhow!("cannot create network namespace {name}: {e} (needs CAP_SYS_ADMIN)"))?;
        let ns = NetNs { name: name.to_owned(), tid, jobs: Some(jobs), thread: Some(thread) };
        ns.cmd("ip", &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// For `ip link set DEV netns TID`.
    pub fn tid(&self) -> i32 {
        self.tid
    }

    /// Writes a sysctl of this namespace (`net.*` sysctls are per namespace,
    /// resolved against the writing thread's namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let value = value.to_owned();
        let shown = format!("{key}={value}");
        self.run(move || std::fs::write(&path, value))?
            .with_context(|| format!("failed to set {shown} in namespace {}", self.name))
    }

    /// Runs `f` on the namespace's thread and returns its result.
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Result<R> {
        let (tx, rx) = mpsc::channel();
        self.jobs
            .as_ref()
            .context("namespace already closed")?
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| anyhow!("namespace thread for {} is gone", self.name))?;
        rx.recv().map_err(|_| anyhow!("namespace job in {} panicked", self.name))
    }

    /// Runs a command inside the namespace; returns its stdout. On failure
    /// the error names the command and shows its stderr.
    pub fn cmd(&self, program: &str, args: &[&str]) -> Result<String> {
        self.cmd_with_input(program, args, None)
    }

    /// Like [`NetNs::cmd`], feeding `input` on stdin (for `*-restore`, `nft -f -`).
    pub fn cmd_with_input(&self, program: &str, args: &[&str], input: Option<String>) -> Result<String> {
        let program = program.to_owned();
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let ns = self.name.clone();
        self.run(move || run_command(&ns, &program, &args, input))?
    }

    /// Interface index of `dev` in this namespace.
    pub fn ifindex(&self, dev: &str) -> Result<u32> {
        let out = self.cmd("ip", &["-o", "link", "show", "dev", dev])?;
        // "5: to-client@if4: <BROADCAST,...": the index leads the line.
        out.split(':')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .with_context(|| format!("cannot read the ifindex of {dev} from `{}`", out.trim()))
    }

    /// Packet counter of the first rule of `chain` in `table`, as listed by
    /// `iptables` (e.g. `iptables-legacy`) in this namespace.
    pub fn first_rule_packets(&self, iptables: &str, table: &str, chain: &str) -> Result<u64> {
        let out = self.cmd(iptables, &["-t", table, "-L", chain, "-v", "-x", "-n"])?;
        // Two header lines ("Chain ...", column names), then the rules.
        let line = out.lines().nth(2).with_context(|| format!("no rule in {table}/{chain}"))?;
        line.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("cannot read the packet counter from `{line}`"))
    }

    /// Inode of the namespace (as in `/proc/PID/ns/net`; the kernel's
    /// `ns.inum`, a u32), which the probes record per packet.
    pub fn inode(&self) -> Result<u32> {
        let ino = self
            .run(|| {
                use std::os::unix::fs::MetadataExt as _;
                std::fs::metadata("/proc/thread-self/ns/net").map(|m| m.ino())
            })?
            .context("reading /proc/thread-self/ns/net")?;
        u32::try_from(ino).context("namespace inode does not fit in 32 bits")
    }
}

fn run_command(ns: &str, program: &str, args: &[String], input: Option<String>) -> Result<String> {
    use std::{io::Write as _, process::Stdio};
    let shown = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to run `{shown}` in namespace {ns} (is {program} installed?)"))?;
    // Stdin is written on its own thread while this one reads stdout and
    // stderr: a tool that answers before it has read all its input (a large
    // ruleset, an error on line 1) would otherwise fill its output pipe and
    // wait for us while we wait for it to read.
    let writer = match input {
        Some(input) => {
            let mut stdin = child.stdin.take().context("child stdin")?;
            Some(std::thread::spawn(move || stdin.write_all(input.as_bytes())))
        }
        None => None,
    };
    let out = child.wait_with_output().with_context(|| format!("waiting for `{shown}`"))?;
    let written = writer.map(|w| w.join().unwrap_or_else(|_| Err(std::io::Error::other("stdin writer panicked"))));
    if !out.status.success() {
        bail!(
            "`{shown}` failed in namespace {ns} ({})\n--- stderr ---\n{}--- end ---",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A tool that succeeded without reading all of its input did not get
    // what it was given: that is a failure, not a success.
    if let Some(Err(e)) = written {
        bail!("`{shown}` exited before reading all of its input in namespace {ns}: {e}");
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Closing the channel ends the thread; the namespace goes with it.
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::run_command;

    /// A tool that writes a pipe's worth of output before reading its input
    /// (as a restore tool reporting an early error does) used to deadlock:
    /// we blocked writing stdin while it blocked writing stdout.
    #[test]
    fn a_tool_that_answers_before_reading_its_input_does_not_deadlock() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let script = "head -c 1000000 /dev/zero; cat > /dev/null".to_owned();
            let out = run_command("test", "sh", &["-c".into(), script], Some("x".repeat(1_000_000)));
            let _ = done.send(out.map(|o| o.len()));
        });
        let out = finished.recv_timeout(std::time::Duration::from_secs(30)).expect("run_command deadlocked");
        assert_eq!(out.unwrap(), 1_000_000);
    }

    #[test]
    fn a_tool_that_exits_without_reading_its_input_fails() {
        let err = run_command("test", "true", &[], Some("x".repeat(1_000_000))).unwrap_err();
        assert!(format!("{err:#}").contains("exited before reading all of its input"), "{err:#}");
    }
}
