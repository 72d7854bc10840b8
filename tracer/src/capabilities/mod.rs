//! What the running kernel lets pathcost do: privileges, BTF, kprobes,
//! fentry, and where each probed symbol lives (vmlinux or which module).
//! `detect` (through [`crate::detection::kernel`]) and `attach` read the
//! kernel through these same parsers and decisions, so they cannot
//! disagree.
//!
//! Everything here only reads `/proc` and `/sys`; nothing is changed.

pub mod btf;

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};

/// `uname -r` of the running kernel.
pub fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Where a kernel symbol lives, from `/proc/kallsyms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SymbolHome {
    Vmlinux,
    Module(String),
}

/// The running kernel's symbols (`/proc/kallsyms`), with the module each
/// belongs to; only the names asked about are kept. `detect` and `attach`
/// both read the kernel through this one parser.
///
/// Functions (text symbols, `t`/`T`) are what probes attach to; other kinds
/// (data, listed only with CONFIG_KALLSYMS_ALL) still show that a feature
/// is built, e.g. `__tracepoint_*` on kernels before `__traceiter_*`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kallsyms {
    /// Every wanted name listed, with the home of its first text symbol
    /// (`None`: listed, but not as a function).
    symbols: HashMap<String, Option<SymbolHome>>,
}

impl Kallsyms {
    /// Reads `/proc/kallsyms`, keeping the symbols whose name is in `wanted`.
    pub fn load(wanted: &[&str]) -> Result<Kallsyms> {
        let text = fs::read_to_string("/proc/kallsyms").context("failed to read /proc/kallsyms")?;
        Ok(Self::parse(&text, wanted))
    }

    pub fn parse(text: &str, wanted: &[&str]) -> Kallsyms {
        let wanted: HashSet<&str> = wanted.iter().copied().collect();
        let mut symbols: HashMap<String, Option<SymbolHome>> = HashMap::new();
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            let (Some(_addr), Some(kind), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if !wanted.contains(name) {
                continue;
            }
            let function = matches!(kind, "t" | "T").then(|| match parts.next() {
                Some(m) => SymbolHome::Module(m.trim_matches(|c| c == '[' || c == ']').to_owned()),
                None => SymbolHome::Vmlinux,
            });
            let entry = symbols.entry(name.to_owned()).or_default();
            if entry.is_none() {
                *entry = function;
            }
        }
        Kallsyms { symbols }
    }

    /// Where the function `name` lives; `None` when no text symbol has
    /// that name (a probe cannot attach to it).
    pub fn home(&self, name: &str) -> Option<&SymbolHome> {
        self.symbols.get(name).and_then(Option::as_ref)
    }

    /// Whether any symbol, function or not, has that name.
    pub fn has(&self, name: &str) -> bool {
        self.symbols.contains_key(name)
    }

    /// Made-up kernels for tests: functions with their module.
    #[cfg(test)]
    pub fn from_functions(functions: &[(&str, Option<&str>)]) -> Kallsyms {
        let home = |m: Option<&str>| m.map_or(SymbolHome::Vmlinux, |m| SymbolHome::Module(m.to_owned()));
        Kallsyms { symbols: functions.iter().map(|(n, m)| ((*n).to_owned(), Some(home(*m)))).collect() }
    }
}

/// Where tracefs is mounted, if it is (with its `events`), from
/// `/proc/self/mounts`. Nothing is mounted: touching
/// `/sys/kernel/debug/tracing` would automount it, so only an existing
/// mount counts.
pub fn tracefs_mount() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mount_point(&mounts, "tracefs").filter(|p| p.join("events").is_dir())
}

/// The first mount point of a filesystem type in a mounts table.
pub fn mount_point(mounts: &str, fstype: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, ty) = (f.next()?, f.next()?, f.next()?);
        (ty == fstype).then(|| PathBuf::from(dir.replace("\\040", " ")))
    })
}

/// The interfaces a kprobe can be created through. Whether kprobes are
/// usable is decided here only, from these, so that `detect` reports what
/// `attach` will do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KprobeInterfaces {
    /// `/sys/bus/event_source/devices/kprobe`: the perf PMU aya attaches
    /// through (registered with CONFIG_KPROBE_EVENTS).
    pub pmu: bool,
    /// `kprobe_events` in an already-mounted tracefs: aya's fallback.
    pub tracefs_events: bool,
}

impl KprobeInterfaces {
    /// Reads both; `tracefs` is where tracefs is mounted ([`tracefs_mount`]).
    pub fn read(tracefs: Option<&Path>) -> KprobeInterfaces {
        KprobeInterfaces {
            pmu: Path::new("/sys/bus/event_source/devices/kprobe/type").exists(),
            tracefs_events: tracefs.is_some_and(|t| t.join("kprobe_events").exists()),
        }
    }

    pub fn usable(self) -> bool {
        self.pmu || self.tracefs_events
    }
}

/// Kernel features that decide which probe mechanism can work.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KernelFeatures {
    pub release: String,
    pub btf: bool,
    /// Kprobes can be created here ([`KprobeInterfaces::usable`]).
    pub kprobes: bool,
}

impl KernelFeatures {
    pub fn probe() -> KernelFeatures {
        KernelFeatures {
            release: kernel_release(),
            btf: Path::new("/sys/kernel/btf/vmlinux").exists(),
            kprobes: KprobeInterfaces::read(tracefs_mount().as_deref()).usable(),
        }
    }
}

/// Tracepoints the bracket backend attaches to (as raw tracepoints, which
/// need no tracefs mount): (category, event).
pub const BRACKET_TRACEPOINTS: [(&str, &str); 2] = [("net", "netif_receive_skb"), ("fib", "fib_table_lookup")];

/// Whether the kernel has the tracepoint `name`: since 5.10 each has an
/// iterator function `__traceiter_<name>` (a text symbol, listed even
/// without CONFIG_KALLSYMS_ALL and without a tracefs mount).
pub fn has_tracepoint(kallsyms: &Kallsyms, name: &str) -> bool {
    kallsyms.home(&format!("__traceiter_{name}")).is_some()
}

/// Why the bracket backend cannot attach here, or `None` when it can.
pub fn bracket_unavailable_reason() -> Option<String> {
    let wanted: Vec<String> = BRACKET_TRACEPOINTS.iter().map(|(_, t)| format!("__traceiter_{t}")).collect();
    let names: Vec<&str> = wanted.iter().map(String::as_str).collect();
    let kallsyms = match Kallsyms::load(&names) {
        Ok(k) => k,
        Err(e) => return Some(format!("{e:#}")),
    };
    let missing: Vec<&str> =
        BRACKET_TRACEPOINTS.iter().map(|(_, t)| *t).filter(|t| !has_tracepoint(&kallsyms, t)).collect();
    (!missing.is_empty()).then(|| format!("kernel has no tracepoint {}", missing.join(" or ")))
}

/// Capabilities pathcost needs to load and attach tracing programs.
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Fails with one clear message when this process cannot load tracing
/// programs: CAP_SYS_ADMIN, or CAP_BPF together with CAP_PERFMON.
pub fn require_tracing_privileges() -> Result<()> {
    let status = fs::read_to_string("/proc/self/status").context("failed to read /proc/self/status")?;
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| effective & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    // SAFETY: geteuid cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        // main prefixes "pathcost: ", so the line reads "pathcost: needs root ...".
        bail!("needs root (or CAP_BPF and CAP_PERFMON) to load eBPF programs: run it with sudo");
    }
    bail!("this process lacks CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON, needed to load eBPF programs; grant them to the container or process")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kallsyms_keeps_wanted_text_symbols_with_their_module() {
        let text = "\
ffffffff81000000 T nf_hook_slow
ffffffffc0001000 t ip_vs_in_hook\t[ip_vs]
ffffffffc0002000 T ipt_do_table\t[ip_tables]
ffffffff82000000 D nft_do_chain
ffffffff81000010 T unrelated
";
        let k = Kallsyms::parse(text, &["nf_hook_slow", "ip_vs_in_hook", "ipt_do_table", "nft_do_chain"]);
        assert_eq!(k.home("nf_hook_slow"), Some(&SymbolHome::Vmlinux));
        assert_eq!(k.home("ip_vs_in_hook"), Some(&SymbolHome::Module("ip_vs".into())));
        assert_eq!(k.home("ipt_do_table"), Some(&SymbolHome::Module("ip_tables".into())));
        // Data symbols are not functions we can probe, but they are there.
        assert_eq!(k.home("nft_do_chain"), None);
        assert!(k.has("nft_do_chain"));
        assert_eq!(k.home("unrelated"), None);
        assert!(!k.has("unrelated"));
    }
}
