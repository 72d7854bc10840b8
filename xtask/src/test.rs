//! `cargo xtask test`: the host tests, then the VM suite on each kernel.
//!
//! Every kernel runs even when an earlier one failed, so one CI run shows the whole
//! picture; the summary table and the exit status report them together.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::vm::kernel::{Apt, KernelSeries};
use crate::vm::{self, Job};
use crate::{build, cmd, setup, Workspace};

#[derive(clap::Args)]
pub struct Options {
    /// Kernel to run the VM suite on; repeat for several (default: all).
    #[arg(long = "kernel", value_enum)]
    kernels: Vec<KernelSeries>,
    /// Run the host tests only.
    #[arg(long)]
    skip_vm: bool,
    /// Run only this test binary in the VM (e.g. `probe_accuracy`); repeat for
    /// several (default: all). For iterating on one test without the whole suite.
    #[arg(long = "test", value_name = "NAME")]
    only: Vec<String>,
    /// Seconds before each kernel's VM is killed.
    #[arg(long, default_value_t = 1200)]
    timeout: u64,
}

/// One row of the summary.
struct Row {
    kernel: String,
    version: String,
    result: String,
    passed: bool,
    wall: Duration,
}

pub fn run(ws: &Workspace, options: &Options) -> Result<()> {
    setup::run()?;
    println!("test: host tests");
    // The CLI tests run the pathcost binary next to them in target/debug.
    cmd::run(Command::new(crate::cargo()).current_dir(&ws.root).args(["build", "-p", "tracer"]))?;
    // Tests that need root or kprobes skip themselves here and run in the VM.
    cmd::run(
        Command::new(crate::cargo())
            .current_dir(&ws.root)
            .args(["test", "--workspace"]),
    )?;
    if options.skip_vm {
        return Ok(());
    }

    println!("test: building the VM suite");
    let pathcost = build::pathcost(ws, true)?;
    let mut tests = build::vm_tests(ws, true)?;
    if !options.only.is_empty() {
        let unknown: Vec<&str> = options
            .only
            .iter()
            .filter(|name| !tests.iter().any(|t| &t.name == *name))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            let known: Vec<&str> = tests.iter().map(|t| t.name.as_str()).collect();
            bail!("no VM test binary named {} (there are: {})", unknown.join(", "), known.join(", "));
        }
        tests.retain(|t| options.only.contains(&t.name));
    }
    let kernels = if options.kernels.is_empty() {
        KernelSeries::ALL.to_vec()
    } else {
        options.kernels.clone()
    };
    let job = Job::Tests { pathcost, tests };
    let mut apt = Apt::default();
    let mut rows = Vec::new();
    for series in kernels {
        let started = Instant::now();
        let row = match vm::run_job(
            ws,
            &mut apt,
            series,
            &job,
            Duration::from_secs(options.timeout),
        ) {
            Ok(run) => Row {
                kernel: series.tag().to_owned(),
                version: run.package_version,
                passed: run.report.outcome.is_success(),
                result: run.report.outcome.to_string(),
                wall: started.elapsed(),
            },
            // Not being able to boot one kernel (say, its download failed) is that
            // kernel's failure; the others still run.
            Err(err) => {
                eprintln!("[{series}] error: {err:#}");
                Row {
                    kernel: series.tag().to_owned(),
                    version: "-".to_owned(),
                    passed: false,
                    result: format!("error: {err:#}"),
                    wall: started.elapsed(),
                }
            }
        };
        rows.push(row);
    }

    print_summary(&rows);
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| !r.passed)
        .map(|r| r.kernel.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("the VM suite failed on kernel {}", failed.join(", "));
    }
    Ok(())
}

fn print_summary(rows: &[Row]) {
    let version_width = rows
        .iter()
        .map(|r| r.version.len())
        .max()
        .unwrap_or(0)
        .max("package".len());
    println!();
    println!(
        "{:<7} {:<version_width$} {:>9}  result",
        "kernel", "package", "wall"
    );
    for row in rows {
        // Only the first line: a failure reason can carry a whole stderr.
        let result = row.result.lines().next().unwrap_or_default();
        println!(
            "{:<7} {:<version_width$} {:>8.0}s  {result}",
            row.kernel,
            row.version,
            row.wall.as_secs_f64()
        );
    }
}
