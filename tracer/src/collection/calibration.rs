//! Measures what pathcost's own probes cost on this kernel, so reports can
//! show raw and corrected figures side by side.
//!
//! Method: time a trivial syscall (`getppid`) from userspace many times
//! without a probe, then with an entry/exit pair attached to the small
//! kernel function it calls (`__task_pid_nr_ns`) using the same mechanism as the measured sites. The difference
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

/// The kernel function `getppid(2)` calls to translate the parent's pid.
/// Unlike the syscall entry points it has BTF, so fentry can attach too.
pub const TARGETS: [&str; 1] = ["__task_pid_nr_ns"];
/// Syscalls per timing round; a few ms on real hardware, ~0.5 s under TCG.
/// Each call with the probes attached sends one event; all rounds together
/// (25,000 events of 120 bytes) fit the 4 MiB ring, which no one drains
/// while calibrating.
const CALLS: u32 = 5_000;
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

/// Removes the probes' own cost from measured calls: each site's span
/// overhead by the mechanism it was attached with, and a whole pair for
/// every probed call nested inside. Nested calls may use another mechanism
/// than their parent; the costliest calibrated pair is taken for them, so
/// corrected figures err towards too little rather than too much.
#[derive(Clone, Debug, Default)]
pub struct Corrections {
    pub costs: Vec<SelfCost>,
    /// Index into `costs` per site id.
    by_site: [Option<usize>; tracer_ebpf::SITE_COUNT],
    nested_pair_ns: f64,
}

impl Corrections {
    /// `sites` maps each attached site to its mechanism.
    pub fn new(costs: Vec<SelfCost>, sites: &[(SiteId, Mechanism)]) -> Corrections {
        let mut by_site = [None; tracer_ebpf::SITE_COUNT];
        for &(site, mechanism) in sites {
            by_site[site as usize] = costs.iter().position(|c| c.mechanism == mechanism.to_string());
        }
        let nested_pair_ns = costs.iter().map(|c| c.pair_ns).fold(0.0, f64::max);
        Corrections { costs, by_site, nested_pair_ns }
    }

    fn span_ns(&self, site: SiteId) -> f64 {
        self.by_site[site as usize].map_or(0.0, |i| self.costs[i].span_ns)
    }

    /// Inclusive time minus this call's in-span overhead and a whole pair
    /// per probed call nested in it.
    pub fn inclusive(&self, site: SiteId, duration_ns: u64, descendants: u16) -> u64 {
        let overhead = self.span_ns(site) + f64::from(descendants) * self.nested_pair_ns;
        (duration_ns as f64 - overhead).max(0.0) as u64
    }

    /// Self time minus this call's in-span overhead and what the direct
    /// children's pairs left outside their own spans.
    pub fn exclusive(&self, site: SiteId, self_ns: u64, children: u16) -> u64 {
        let outside = (self.nested_pair_ns - self.span_ns(site)).max(0.0);
        let overhead = self.span_ns(site) + f64::from(children) * outside;
        (self_ns as f64 - overhead).max(0.0) as u64
    }
}

/// Median over rounds of the mean wall time per `getppid` call (ns). Public so
/// the accuracy tests can time another instrument's probes the same way.
pub fn time_syscalls() -> f64 {
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
        let cost = |m: &str, pair, span| SelfCost {
            mechanism: m.into(),
            target: "t".into(),
            pair_ns: pair,
            span_ns: span,
            calls: 1,
        };
        let c = Corrections::new(
            vec![cost("fentry", 50.0, 20.0), cost("kprobe", 100.0, 40.0)],
            &[(SiteId::NfHookSlow, Mechanism::Fentry), (SiteId::IptDoTable, Mechanism::Kprobe)],
        );
        // A kprobe site: 1000 ns with 2 nested calls: 40 in-span + 2 × 100.
        assert_eq!(c.inclusive(SiteId::IptDoTable, 1000, 2), 760);
        // An fentry site: its own span is 20; nested pairs at the costliest, 100.
        assert_eq!(c.inclusive(SiteId::NfHookSlow, 1000, 2), 780);
        // Self time: 40 in-span + 2 × (100 − 40) of the children's pairs.
        assert_eq!(c.exclusive(SiteId::IptDoTable, 500, 2), 340);
        // Never below zero; uncalibrated sites are left as they are.
        assert_eq!(c.inclusive(SiteId::IptDoTable, 10, 3), 0);
        assert_eq!(c.inclusive(SiteId::IpvsIn, 1000, 0), 1000);
    }
}
