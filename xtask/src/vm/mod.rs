//! The test VM: a Debian kernel booted under qemu with an initramfs written here,
//! running one job (pathcost, the VM test suite, or a debugging command) with the
//! host workspace mounted at the same path.
//!
//! kernel.rs fetches kernels and plans modules, initramfs.rs packs the image,
//! qemu.rs boots it and judges the console; this module ties them together.

pub mod initramfs;
pub mod kernel;
pub mod qemu;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::build::TestBinary;
use crate::cmd::shell_quote;
use crate::{setup, Workspace};
use kernel::{Apt, KernelSeries};
use qemu::{BootReport, Outcome};

/// Where the VM's pathcost binary lives; tests may run it by this path.
pub const GUEST_PATHCOST: &str = "/bin/pathcost";

/// Tests that can only run on the host sit in a `mod host_only` (see `skip` in
/// tests/src/lib.rs: in the VM a skip fails the test, so the VM must not reach
/// tests whose conditions it can never meet). libtest's `--skip` takes a substring
/// of the test path.
pub const HOST_ONLY_FILTER: &str = "host_only::";

/// What the VM runs once it is up.
pub enum Job {
    /// `/bin/pathcost ARGS...`.
    Pathcost { binary: PathBuf, args: Vec<String> },
    /// Every test binary in turn; a failing one does not stop the next.
    Tests {
        pathcost: PathBuf,
        tests: Vec<TestBinary>,
    },
    /// A shell snippet, for debugging the VM itself.
    Shell(String),
}

impl Job {
    fn payload(&self) -> initramfs::Payload {
        let mut executables = Vec::new();
        let script = match self {
            Self::Pathcost { binary, args } => {
                executables.push((GUEST_PATHCOST.to_owned(), binary.clone()));
                let mut line = GUEST_PATHCOST.to_owned();
                for arg in args {
                    line.push(' ');
                    line.push_str(&shell_quote(arg));
                }
                line + "\n"
            }
            Self::Tests { pathcost, tests } => {
                executables.push((GUEST_PATHCOST.to_owned(), pathcost.clone()));
                let mut script = String::from("failed=\"\"\n");
                for test in tests {
                    let guest = format!("/tests/{}", test.name);
                    executables.push((guest.clone(), test.path.clone()));
                    let guest = shell_quote(&guest);
                    let name = shell_quote(&test.name);
                    script.push_str(&format!(
                        "echo \"job: running {guest}\"\n\
                         PATHCOST_IN_VM=1 {guest} --test-threads=1 --nocapture --skip {HOST_ONLY_FILTER} \
                         || failed=\"$failed \"{name}\n"
                    ));
                }
                script.push_str(
                    "if [ -n \"$failed\" ]; then\n    echo \"job: failed:$failed\"\n    exit 1\nfi\n",
                );
                script
            }
            Self::Shell(snippet) => format!("{snippet}\n"),
        };
        initramfs::Payload {
            job_script: format!(
                "# Written by cargo xtask; run by /init from the workspace.\n{script}"
            ),
            executables,
        }
    }
}

/// One kernel's run, for the summary.
pub struct KernelRun {
    pub series: KernelSeries,
    pub package_version: String,
    pub report: BootReport,
}

/// Fetches the kernel if needed, packs the initramfs and boots it.
pub fn run_job(
    ws: &Workspace,
    apt: &mut Apt,
    series: KernelSeries,
    job: &Job,
    timeout: Duration,
) -> Result<KernelRun> {
    let tag = series.tag();
    let cache = ws.vm_cache();
    let started = Instant::now();
    let kernel = kernel::prepare(series, &cache, apt)
        .with_context(|| format!("failed to prepare kernel {tag}"))?;
    println!(
        "[{tag}] kernel {} ({}) ready in {:.1} s",
        kernel.package,
        kernel.version,
        started.elapsed().as_secs_f64()
    );

    let plan = kernel.module_plan()?;
    if !plan.absent.is_empty() {
        eprintln!(
            "[{tag}] warning: modules neither in {} nor built in: {}",
            kernel.release,
            plan.absent.join(" ")
        );
    }
    let started = Instant::now();
    let initrd = cache.join(format!("initramfs-{tag}.cpio"));
    let stats = initramfs::build(&kernel, &plan, &job.payload(), &initrd)?;
    println!(
        "[{tag}] initramfs {}: {} entries, {:.1} MiB, {} modules, built in {:.1} s",
        ws.relative(&initrd).display(),
        stats.entries,
        stats.bytes as f64 / (1024.0 * 1024.0),
        plan.load_order.len(),
        started.elapsed().as_secs_f64()
    );

    let report = qemu::boot(&qemu::Boot {
        tag,
        vmlinuz: &kernel.vmlinuz,
        initrd: &initrd,
        workspace: &ws.root,
        timeout,
    })?;
    println!(
        "[{tag}] {} (init reached after {}, VM wall time {:.1} s)",
        report.outcome,
        report
            .init_reached
            .map_or("never".to_owned(), |t| format!("{:.1} s", t.as_secs_f64())),
        report.wall.as_secs_f64()
    );
    Ok(KernelRun {
        series,
        package_version: kernel.version,
        report,
    })
}

/// Turns a VM outcome into this process's result.
pub fn require_success(run: &KernelRun) -> Result<()> {
    match &run.report.outcome {
        Outcome::Success => Ok(()),
        outcome => anyhow::bail!("VM on kernel {}: {outcome}", run.series),
    }
}

#[derive(clap::Args)]
pub struct ExecOptions {
    /// Kernel to boot.
    #[arg(long, value_enum, default_value = "6.12")]
    kernel: KernelSeries,
    /// Seconds before the VM is killed.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Shell command run by busybox sh in the workspace; the words are joined with
    /// spaces, so `-- 'nft list ruleset; ipvsadm -Ln'` works.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// `cargo xtask vm-exec`: the VM without pathcost, for debugging the VM itself.
pub fn exec(ws: &Workspace, options: &ExecOptions) -> Result<()> {
    setup::run()?;
    let job = Job::Shell(options.command.join(" "));
    let run = run_job(
        ws,
        &mut Apt::default(),
        options.kernel,
        &job,
        Duration::from_secs(options.timeout),
    )?;
    require_success(&run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pathcost_job_quotes_arguments() {
        let job = Job::Pathcost {
            binary: "/w/target/release/pathcost".into(),
            args: vec!["sweep".into(), "--label".into(), "a b; rm -rf /".into()],
        };
        let payload = job.payload();
        assert!(payload
            .job_script
            .ends_with("\n/bin/pathcost sweep --label 'a b; rm -rf /'\n"));
        assert_eq!(
            payload.executables,
            [(
                GUEST_PATHCOST.to_owned(),
                "/w/target/release/pathcost".into()
            )]
        );
    }

    #[test]
    fn test_job_runs_every_binary() {
        let job = Job::Tests {
            pathcost: "/p".into(),
            tests: vec![
                TestBinary {
                    name: "probes".into(),
                    path: "/t/probes-1".into(),
                },
                TestBinary {
                    name: "ipvs".into(),
                    path: "/t/ipvs-2".into(),
                },
            ],
        };
        let payload = job.payload();
        assert!(payload.job_script.contains(
            "PATHCOST_IN_VM=1 /tests/probes --test-threads=1 --nocapture --skip host_only:: \
             || failed=\"$failed \"probes\n"
        ));
        assert!(payload.job_script.contains("/tests/ipvs --test-threads=1"));
        assert!(payload.job_script.contains("exit 1"));
        assert_eq!(payload.executables.len(), 3);
    }
}
