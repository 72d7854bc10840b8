//! The programs' own run time, from the kernel's BPF run-time statistics
//! (`run_time_ns` / `run_cnt` per program, counted while
//! `BPF_ENABLE_STATS(BPF_STATS_RUN_TIME)` is held open).
//!
//! It is the time spent inside the entry and exit programs only: the
//! mechanism's own cost around them (trampoline, kprobe trap, kretprobe
//! return hijack) is not in it, so it sits between the floor (an empty
//! pair) and the wall time a pair adds, and says where pathcost's share of
//! that time goes.

use std::{collections::HashSet, os::fd::OwnedFd};

use aya::programs::ProgramInfo;

/// Keeps the kernel's run-time statistics on while held. The kernel counts
/// for every program while any holder keeps its fd open, and adds the two
/// clock reads per run that this costs to each run it counts.
pub struct RunTimeStats {
    _fd: OwnedFd,
}

impl RunTimeStats {
    /// Turns statistics on, or says why not (kernels before 5.8, or
    /// `CAP_SYS_ADMIN` missing); figures then read as absent, not zero.
    pub fn enable() -> Result<RunTimeStats, String> {
        aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .map(|fd| RunTimeStats { _fd: fd })
            .map_err(|e| format!("BPF run-time statistics unavailable: {e}"))
    }
}

/// One program's counters since it was loaded (only runs while statistics
/// were on are counted).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProgramRunTime {
    pub program: String,
    pub run_count: u64,
    pub run_time_ns: u64,
}

impl ProgramRunTime {
    fn of(program: String, info: &ProgramInfo) -> ProgramRunTime {
        ProgramRunTime { program, run_count: info.run_count(), run_time_ns: info.run_time().as_nanos() as u64 }
    }
}

/// Every loaded program of `ebpf` that ran at least once.
pub fn program_run_times(ebpf: &aya::Ebpf) -> Vec<ProgramRunTime> {
    OwnPrograms::of(ebpf).run_times()
}

/// Ids of every BPF program loaded on the machine now: taken before another
/// tool starts, it tells that tool's programs apart afterwards.
pub fn loaded_program_ids() -> HashSet<u32> {
    aya::programs::loaded_programs().filter_map(Result::ok).map(|p| p.id()).collect()
}

/// Programs loaded since `before` was taken (another tool's, e.g.
/// bpftrace's) that ran at least once.
pub fn programs_loaded_since(before: &HashSet<u32>) -> Vec<ProgramRunTime> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| !before.contains(&p.id()))
        .map(|p| ProgramRunTime::of(p.name_as_str().unwrap_or("?").to_owned(), &p))
        .filter(|r| r.run_count > 0)
        .collect()
}

/// The programs' run time per probed call: everything they ran, divided by
/// the calls they timed. Entry and exit programs both run once per call, so
/// this is one pair's in-program cost. `None` before any call.
pub fn run_ns_per_call(programs: &[ProgramRunTime], calls: u64) -> Option<f64> {
    (calls > 0).then(|| programs.iter().map(|p| p.run_time_ns).sum::<u64>() as f64 / calls as f64)
}

/// One site's entry and exit programs together: what a probed call costs
/// inside the programs.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PairRunTime {
    /// The entry program's name (`fentry_nf_hook_slow`, `kprobe_ipt_do_table`).
    pub entry: String,
    /// Runs of the entry program: the calls timed.
    pub calls: u64,
    /// Entry plus exit program run time per call (ns).
    pub ns_per_call: f64,
}

/// Pairs entry programs with their exits by name (`kprobe_X` with
/// `kretprobe_X`, `fentry_X` with `fexit_X`).
pub fn pair_run_times(programs: &[ProgramRunTime]) -> Vec<PairRunTime> {
    let find = |name: &str| programs.iter().find(|p| p.program == name);
    programs
        .iter()
        .filter_map(|entry| {
            let exit = [("kprobe_", "kretprobe_"), ("fentry_", "fexit_")]
                .iter()
                .find_map(|(e, x)| Some(format!("{x}{}", entry.program.strip_prefix(e)?)))?;
            let exit_ns = find(&exit).map_or(0, |x| x.run_time_ns);
            Some(PairRunTime {
                entry: entry.program.clone(),
                calls: entry.run_count,
                ns_per_call: (entry.run_time_ns + exit_ns) as f64 / entry.run_count.max(1) as f64,
            })
        })
        .collect()
}

/// Our own programs, by id, so their counters can be read where the
/// programs themselves are not at hand (at scrape time).
#[derive(Clone, Debug, Default)]
pub struct OwnPrograms(Vec<(u32, String)>);

impl OwnPrograms {
    /// The programs of `ebpf` loaded so far.
    pub fn of(ebpf: &aya::Ebpf) -> OwnPrograms {
        OwnPrograms(ebpf.programs().filter_map(|(name, p)| Some((p.info().ok()?.id(), name.to_owned()))).collect())
    }

    /// Their counters now (programs that never ran are left out).
    pub fn run_times(&self) -> Vec<ProgramRunTime> {
        let mut out: Vec<ProgramRunTime> = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .filter_map(|p| {
                let (_, name) = self.0.iter().find(|(id, _)| *id == p.id())?;
                Some(ProgramRunTime::of(name.clone(), &p))
            })
            .filter(|r| r.run_count > 0)
            .collect();
        out.sort_by(|a, b| a.program.cmp(&b.program));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_time_per_call_sums_entry_and_exit_programs() {
        let p = |name: &str, n, t| ProgramRunTime { program: name.into(), run_count: n, run_time_ns: t };
        let progs = [p("kprobe_x", 10, 3000), p("kretprobe_x", 10, 2000)];
        assert_eq!(run_ns_per_call(&progs, 10), Some(500.0));
        assert_eq!(run_ns_per_call(&progs, 0), None);
        let pairs = pair_run_times(&progs);
        assert_eq!(pairs, vec![PairRunTime { entry: "kprobe_x".into(), calls: 10, ns_per_call: 500.0 }]);
    }
}
