//! `cargo xtask bench`: pathcost's own overhead (`pathcost bench`) measured in
//! the test VM on each kernel. Figures are printed and written to
//! target/pathcost-bench/<kernel>.json; under TCG only the ratios mean much.

use std::time::Duration;

use anyhow::{bail, Result};

use crate::vm::kernel::{Apt, KernelSeries};
use crate::vm::{self, Job};
use crate::{build, setup, Workspace};

#[derive(clap::Args)]
pub struct Options {
    /// Kernel to measure on; repeat for several (default: all).
    #[arg(long = "kernel", value_enum)]
    kernels: Vec<KernelSeries>,
    /// Seconds before each VM is killed.
    #[arg(long, default_value_t = 1200)]
    timeout: u64,
    /// Extra arguments for `pathcost bench`.
    #[arg(last = true)]
    args: Vec<String>,
}

pub fn run(ws: &Workspace, options: &Options) -> Result<()> {
    setup::run()?;
    let binary = build::pathcost(ws, true)?;
    let kernels = if options.kernels.is_empty() { KernelSeries::ALL.to_vec() } else { options.kernels.clone() };
    let mut apt = Apt::default();
    let mut failed = Vec::new();
    for kernel in kernels {
        let mut args = vec![
            "bench".to_owned(),
            "--output".to_owned(),
            format!("target/pathcost-bench/{}.json", kernel.tag()),
        ];
        args.extend(options.args.iter().cloned());
        let run = vm::run_job(ws, &mut apt, kernel, &Job::Pathcost { binary: binary.clone(), args }, Duration::from_secs(options.timeout))?;
        if let Err(e) = vm::require_success(&run) {
            eprintln!("bench: {e:#}");
            failed.push(kernel.tag());
        }
    }
    if !failed.is_empty() {
        bail!("bench failed on kernel {}", failed.join(", "));
    }
    Ok(())
}
