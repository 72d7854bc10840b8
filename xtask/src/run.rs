//! `cargo xtask run`: build pathcost and run it in a test VM, where kprobes and IPVS
//! exist. The workspace is shared at the same path, so `--output target/report`
//! inside the VM lands in the host's target/report.

use std::time::Duration;

use anyhow::Result;

use crate::vm::kernel::{Apt, KernelSeries};
use crate::vm::{self, Job};
use crate::{build, setup, Workspace};

/// What `cargo xtask run` runs when given no arguments after `--`: the default
/// sweep (every mode at 10, 100 and 1000 services; about two minutes under TCG),
/// which writes target/pathcost-sweep/results.json on the host.
const DEFAULT_ARGS: &[&str] = &["sweep"];

#[derive(clap::Args)]
pub struct Options {
    /// Kernel to boot.
    #[arg(long, value_enum, default_value = "6.12")]
    kernel: KernelSeries,
    /// Seconds before the VM is killed.
    #[arg(long, default_value_t = 1200)]
    timeout: u64,
    /// Arguments for pathcost (default: `sweep`).
    #[arg(last = true)]
    args: Vec<String>,
}

pub fn run(ws: &Workspace, options: &Options) -> Result<()> {
    setup::run()?;
    // Release: under TCG a debug build's overhead would swamp what it measures.
    let binary = build::pathcost(ws, true)?;
    let args = if options.args.is_empty() {
        DEFAULT_ARGS.iter().map(|&arg| arg.to_owned()).collect()
    } else {
        options.args.clone()
    };
    let run = vm::run_job(
        ws,
        &mut Apt::default(),
        options.kernel,
        &Job::Pathcost { binary, args },
        Duration::from_secs(options.timeout),
    )?;
    vm::require_success(&run)
}
