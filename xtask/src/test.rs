//! `cargo xtask test`: the host tests and a table of those that skipped here,
//! the parsers' fuzzing and clippy (`lint`), then the VM suite on each kernel,
//! where a skip is a failure.
//!
//! Every kernel runs even when an earlier one failed, so one CI run shows the whole
//! picture; the summary table and the exit status report them together.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

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
    /// Seconds before each kernel's VM is killed.
    #[arg(long, default_value_t = 1200)]
    timeout: u64,
    /// Only this test file of tests/tests (e.g. `capabilities`), on the
    /// host and in the VM; repeat for several (default: everything). For
    /// checking one change in the VM without the whole suite's time.
    #[arg(long = "test", value_name = "NAME")]
    tests: Vec<String>,
}

/// Where `skip` in tests/src/lib.rs appends `binary<TAB>test<TAB>why` lines
/// (the same name is defined there; xtask does not depend on the tests crate).
const SKIP_LOG_ENV: &str = "PATHCOST_SKIP_LOG";

/// Seconds each fuzz target of tests/tests/fuzz.rs runs for (the same name
/// is read there).
const FUZZ_SECONDS_ENV: &str = "PATHCOST_FUZZ_SECONDS";
/// Per target: 7 targets, about 70 s in all, so the step adds little over
/// a minute to a cold run (proptest itself builds in seconds).
const FUZZ_SECONDS: &str = "10";

/// The bounded fuzz step: every parser target for FUZZ_SECONDS, one at a
/// time, each printing its executions and time.
fn fuzz(ws: &Workspace) -> Result<()> {
    println!("test: fuzzing the parsers, {FUZZ_SECONDS} s per target");
    let started = Instant::now();
    cmd::run(
        Command::new(crate::cargo())
            .current_dir(&ws.root)
            .args(["test", "-p", "pathcost-tests", "--test", "fuzz", "--", "--nocapture", "--test-threads", "1"])
            .env(FUZZ_SECONDS_ENV, FUZZ_SECONDS),
    )?;
    println!("test: fuzzing took {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
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
    // Tests that need root or kprobes skip themselves here and run in the VM;
    // each skip is logged so the list is printed whole, after cargo's output.
    let skip_log = ws.target.join("host-test-skips.tsv");
    let _ = std::fs::remove_file(&skip_log);
    let mut host_tests = Command::new(crate::cargo());
    host_tests
        .current_dir(&ws.root)
        .arg("test")
        .env(SKIP_LOG_ENV, &skip_log)
        // One batch per fuzz target here; the fuzz step below gives them time.
        .env(FUZZ_SECONDS_ENV, "0");
    if options.tests.is_empty() {
        host_tests.arg("--workspace");
    } else {
        host_tests.args(["-p", "pathcost-tests"]);
        for name in &options.tests {
            host_tests.args(["--test", name]);
        }
    }
    let host = cmd::run(&mut host_tests);
    // Shown even when a host test failed: a skip can be the reason.
    print_host_skips(&skip_log)?;
    host?;
    // Part of the whole suite; a run of named test files is for iterating.
    if options.tests.is_empty() {
        fuzz(ws)?;
        crate::lint::run(ws)?;
    }
    if options.skip_vm {
        return Ok(());
    }

    println!("test: building the VM suite");
    let pathcost = build::pathcost(ws, true)?;
    let mut tests = build::vm_tests(ws, true)?;
    if !options.tests.is_empty() {
        tests.retain(|t| options.tests.contains(&t.name));
        let found: Vec<&str> = tests.iter().map(|t| t.name.as_str()).collect();
        if let Some(missing) = options.tests.iter().find(|n| !found.contains(&n.as_str())) {
            bail!("no test file tests/tests/{missing}.rs (built: {})", found.join(", "));
        }
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

/// Every host test that skipped and why, printed before the VM suite starts
/// rather than lost in cargo's output.
fn print_host_skips(log: &Path) -> Result<()> {
    let text = match std::fs::read_to_string(log) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("failed to read {}", log.display())),
    };
    print!("\n{}", skip_table(&text));
    Ok(())
}

/// The skip log as a table sorted by test binary and test.
fn skip_table(log: &str) -> String {
    let mut rows: Vec<[&str; 3]> = log
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, '\t');
            Some([fields.next()?, fields.next()?, fields.next()?])
        })
        .collect();
    if rows.is_empty() {
        return "test: no host test skipped\n".to_owned();
    }
    rows.sort_unstable();
    let width = |i: usize, title: &str| rows.iter().map(|r| r[i].len()).chain([title.len()]).max().unwrap_or(0);
    let (binary_width, test_width) = (width(0, "binary"), width(1, "test"));
    let mut out = format!("test: {} host test(s) skipped:\n", rows.len());
    out += &format!("  {:<binary_width$}  {:<test_width$}  why\n", "binary", "test");
    for [binary, test, why] in &rows {
        out += &format!("  {binary:<binary_width$}  {test:<test_width$}  {why}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_table_sorts_and_aligns_every_logged_skip() {
        let log = "smoke\tkprobe_pairs\tkernel 6.18 has no kprobes\nbracket_accuracy\tbracket_agrees\tneeds root\n";
        assert_eq!(
            skip_table(log),
            "test: 2 host test(s) skipped:\n\
             \x20 binary            test            why\n\
             \x20 bracket_accuracy  bracket_agrees  needs root\n\
             \x20 smoke             kprobe_pairs    kernel 6.18 has no kprobes\n"
        );
        assert_eq!(skip_table(""), "test: no host test skipped\n");
    }
}
