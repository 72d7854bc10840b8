//! Measures what pathcost's own probes cost on this kernel, so reports can
//! show raw and corrected figures side by side.
//!
//! Method: time a trivial syscall (`getppid`) from userspace many times
//! without a probe, then with an entry/exit pair attached to its kernel
//! function using the same mechanism as the measured sites. The difference
//! per call is what one probe pair adds to a packet's path (`pair_ns`). The
//! in-kernel measured duration of that near-empty function is the part of
//! the pair's cost that lands *inside* every measured duration (`span_ns`):
//! it is subtracted from each call, and a nested probed call adds a whole
//! pair to its parent's inclusive time.

use std::time::Instant;

use anyhow::{Context as _, Result};
use aya::{programs::Program, Ebpf};
use tracer_ebpf::SiteId;

use super::KernelMaps;
use crate::{
    capabilities::Kallsyms,
    probes::{attach::attach_calibration, Mechanism, CALIBRATION},
};

/// Kernel functions behind `getppid(2)`, by architecture.
const TARGETS: [&str; 3] = ["__x64_sys_getppid", "__arm64_sys_getppid", "__se_sys_getppid"];
/// Syscalls per timing round; a few ms under real hardware, ~1 s under TCG.
const CALLS: u32 = 20_000;
const ROUNDS: usize = 5;

/// The probes' own cost, measured at start-up.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SelfCost {
    pub mechanism: String,
    /// Kernel function the pair was attached to.
    pub target: String,
    /// Wall time one entry/exit pair adds to a call (ns).
    pub pair_ns: f64,
    /// Part of that cost that falls between the two timestamps, so inside
    /// every measured duration (ns).
    pub span_ns: f64,
    pub calls: u64,
}

impl SelfCost {
    /// Duration with the probes' own cost removed: the in-span part of this
    /// call's pair, and a whole pair for every probed call nested in it.
    pub fn correct_inclusive(&self, duration_ns: u64, descendants: u16) -> u64 {
        let overhead = self.span_ns + f64::from(descendants) * self.pair_ns;
        (duration_ns as f64 - overhead).max(0.0) as u64
    }

    /// Self time with the probes' own cost removed: the nested calls' spans
    /// are already out; what remains of their pairs is taken out here.
    pub fn correct_self(&self, self_ns: u64, children: u16) -> u64 {
        let overhead = self.span_ns + f64::from(children) * (self.pair_ns - self.span_ns).max(0.0);
        (self_ns as f64 - overhead).max(0.0) as u64
    }
}

/// Median over rounds of the mean wall time per `getppid` call (ns).
fn time_syscalls() -> f64 {
    let mut rounds: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..CALLS {
                // SAFETY: getppid has no arguments and cannot fail.
                unsafe { libc::syscall(libc::SYS_getppid) };
            }
            start.elapsed().as_nanos() as f64 / f64::from(CALLS)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[ROUNDS / 2]
}

/// Measures the cost of one probe pair of `mechanism`, then detaches it.
pub fn calibrate(ebpf: &mut Ebpf, maps: &KernelMaps, mechanism: Mechanism) -> Result<SelfCost> {
    let kallsyms = Kallsyms::load(&TARGETS)?;
    let target = TARGETS
        .iter()
        .find(|t| kallsyms.home(t).is_some())
        .context("no getppid syscall function in /proc/kallsyms to calibrate against")?;

    let before = time_syscalls();
    let counted_before = maps.site_count(SiteId::Calibration)?;
    let sum_before = calibration_sum(maps)?;
    attach_calibration(ebpf, mechanism, target)
        .with_context(|| format!("attaching the calibration probes to {target}"))?;
    let after = time_syscalls();
    detach_calibration(ebpf)?;
    let calls = maps.site_count(SiteId::Calibration)? - counted_before;
    let span_sum = calibration_sum(maps)? - sum_before;
    let span_ns = if calls > 0 { span_sum as f64 / calls as f64 } else { 0.0 };
    Ok(SelfCost {
        mechanism: mechanism.to_string(),
        target: (*target).to_owned(),
        pair_ns: (after - before).max(0.0),
        span_ns,
        calls,
    })
}

fn calibration_sum(maps: &KernelMaps) -> Result<u64> {
    Ok(maps
        .histograms()?
        .iter()
        .filter(|h| h.site == SiteId::Calibration)
        .map(|h| h.sum_ns)
        .sum())
}

/// Unloading the calibration programs drops their links.
fn detach_calibration(ebpf: &mut Ebpf) -> Result<()> {
    for prefix in ["kprobe", "kretprobe", "fentry", "fexit"] {
        let name = format!("{prefix}_{}", CALIBRATION.program_stem);
        let Some(prog) = ebpf.program_mut(&name) else { continue };
        let result = match prog {
            Program::KProbe(p) => p.unload(),
            Program::FEntry(p) => p.unload(),
            Program::FExit(p) => p.unload(),
            _ => Ok(()),
        };
        // Unloading a program that was never loaded is not an error here.
        let _ = result;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrections_remove_span_and_nested_pairs() {
        let c = SelfCost {
            mechanism: "kprobe".into(),
            target: "t".into(),
            pair_ns: 100.0,
            span_ns: 40.0,
            calls: 1,
        };
        // 1000 ns with 2 nested probed calls: 40 in-span + 2 × 100.
        assert_eq!(c.correct_inclusive(1000, 2), 760);
        // Self time: 40 in-span + 2 × (100 − 40) of the children's pairs.
        assert_eq!(c.correct_self(500, 2), 340);
        // Never below zero.
        assert_eq!(c.correct_inclusive(10, 3), 0);
    }
}
