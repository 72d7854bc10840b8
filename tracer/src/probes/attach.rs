//! Loads the eBPF object and attaches each requested site with the best
//! mechanism that works on this kernel (fentry/fexit, then kprobe/kretprobe).
//!
//! Every attachment is a file descriptor owned by this process (BPF links
//! and perf-event kprobes, never named tracefs events), so the kernel
//! detaches everything when the process exits, even after SIGKILL.

use std::path::Path;

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    programs::{FEntry, FExit, KProbe, RawTracePoint},
    Ebpf, EbpfLoader,
};
use tracer_ebpf::{ProbeConfig, SiteLayout};

use super::{layout, Backend, Mechanism, ProbeSite};
use crate::collection::runtime::RunTimeStats;
use crate::capabilities::{
    btf::Btf, require_tracing_privileges, Kallsyms, KernelFeatures, SymbolHome,
};

/// Rows the aggregating mode can hold (site × hook × table or chain ×
/// namespace × verdict); a new key beyond them is counted as an
/// `aggregate_overflows` loss.
const AGGREGATE_KEYS: u32 = 256;

/// The compiled eBPF object, built by tracer/build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-ebpf"));

/// What to attach.
#[derive(Clone, Debug)]
pub struct AttachRequest {
    pub sites: Vec<&'static ProbeSite>,
    /// The user named these sites: an absent one is an error, not a note.
    pub explicit: bool,
    pub backend: Backend,
    /// Send one event per call to userspace (exact histograms). Without it
    /// only the in-kernel log2 histograms and counters are kept.
    pub emit_events: bool,
    /// Packets the tracepoint spans may time: the bracket, used with
    /// `Backend::Bracket`, or by `Backend::Auto` when no site attaches; the
    /// transit when `transit` is set.
    pub bracket: Option<BracketFilter>,
    /// Also time each forwarded packet's transit (needs a filter with an
    /// egress device). With no `sites`, the transit is all that attaches.
    pub transit: bool,
}

/// Which packets the tracepoint spans time.
#[derive(Clone, Copy, Debug, Default)]
pub struct BracketFilter {
    /// Ingress interface index (0: any but loopback).
    pub ifindex: u32,
    /// Network namespace inode (0: any).
    pub netns: u32,
    /// Egress interface index for the transit (0: no transit).
    pub egress_ifindex: u32,
}

/// Outcome for one site.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SiteStatus {
    pub site: &'static str,
    /// Kernel symbol that was resolved (e.g. `ip_vs_in_hook`).
    pub symbol: Option<String>,
    /// Module holding it, `None` for vmlinux.
    pub module: Option<String>,
    /// Mechanism used, `None` when the site is not attached.
    pub mechanism: Option<Mechanism>,
    /// Why a better mechanism was not used, or why the site is absent.
    pub notes: Vec<String>,
}

impl AttachedProbes {
    /// Forwards what the programs logged since the last call.
    pub fn flush_log(&mut self) {
        if let Some(log) = &mut self.log {
            log.flush();
        }
    }
}

impl SiteStatus {
    pub fn attached(&self) -> bool {
        self.mechanism.is_some()
    }
}

/// Loaded programs and their attachments. Dropping it detaches everything.
pub struct AttachedProbes {
    pub ebpf: Ebpf,
    /// Rare diagnostics the programs log (a full call stack, frames whose
    /// exit never came), forwarded to the `log` crate; see `flush_log`.
    pub log: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    pub sites: Vec<SiteStatus>,
    pub kernel: KernelFeatures,
    /// Keeps the kernel's BPF run-time statistics on while the programs run
    /// (`None`: unavailable here, and the programs' run time is not reported).
    pub run_stats: Option<RunTimeStats>,
}

/// A site whose symbol was found, ready to attach.
struct Resolved {
    site: &'static ProbeSite,
    symbol: String,
    module: Option<String>,
    layout: SiteLayout,
}

fn module_loaded(module: &str) -> bool {
    Path::new("/sys/module").join(module).exists()
}

/// Finds the symbol, its module and its BTF layout, or says why not.
fn resolve(
    site: &'static ProbeSite,
    kallsyms: &Kallsyms,
    vmlinux: &Btf,
) -> Result<Resolved, String> {
    let Some((symbol, home)) = site
        .symbols
        .iter()
        .find_map(|s| kallsyms.home(s).map(|h| (*s, h.clone())))
    else {
        return Err(match site.module {
            Some(m) if !module_loaded(m) => format!("module {m} is not loaded"),
            _ => format!("no symbol {} in /proc/kallsyms", site.symbols.join(" or ")),
        });
    };
    let module = match &home {
        SymbolHome::Vmlinux => None,
        SymbolHome::Module(m) => Some(m.clone()),
    };
    let layout = match &module {
        None => layout::site_layout(site.id, symbol, vmlinux),
        Some(m) => Btf::module(m, vmlinux)
            .with_context(|| format!("no BTF for module {m} (/sys/kernel/btf/{m})"))
            .and_then(|btf| layout::site_layout(site.id, symbol, &btf)),
    }
    .map_err(|e| format!("{e:#}"))?;
    Ok(Resolved { site, symbol: symbol.to_owned(), module, layout })
}

/// Which programs of a site: the timing ones, or the floor (programs that
/// only return, for `pathcost bench`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavour {
    Timed,
    Floor,
}

/// `<prefix>_<site>` for the timing programs; `<prefix>_floor_<site>` for
/// the floor's fentry/fexit (one per target) and `<prefix>_floor` for its
/// kprobes (one program attached to every function).
fn program_name(prefix: &str, site: &ProbeSite, flavour: Flavour) -> String {
    match flavour {
        Flavour::Timed => format!("{prefix}_{}", site.program_stem),
        Flavour::Floor if prefix.starts_with('f') => format!("{prefix}_floor_{}", site.program_stem),
        Flavour::Floor => format!("{prefix}_floor"),
    }
}

fn attach_fentry(ebpf: &mut Ebpf, site: &ProbeSite, symbol: &str, module: Option<&str>, btf: &aya::Btf, flavour: Flavour) -> Result<()> {
    if let Some(m) = module {
        // aya 0.14 resolves fentry targets in vmlinux BTF only.
        bail!("fentry on module functions ({m}) is not supported by this loader");
    }
    // Exit first, as for kprobes.
    let exit = program_name("fexit", site, flavour);
    let prog: &mut FExit = program(ebpf, &exit)?.try_into()?;
    prog.load(symbol, btf).with_context(|| format!("loading fexit for {symbol}"))?;
    prog.attach().with_context(|| format!("attaching fexit to {symbol}"))?;
    let entry = program_name("fentry", site, flavour);
    let prog: &mut FEntry = program(ebpf, &entry)?.try_into()?;
    prog.load(symbol, btf).with_context(|| format!("loading fentry for {symbol}"))?;
    prog.attach().with_context(|| format!("attaching fentry to {symbol}"))?;
    Ok(())
}

/// A program of the embedded object, by name.
fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name).ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))
}

/// Entry first, then exit. Probes on one address share an aggregated
/// kprobe whose handlers run newest first: with the kretprobe attached last,
/// its setup (taking a return instance) runs before the entry program takes
/// its start time instead of inside every measured span (4.5 µs a call
/// under TCG, measured against bpftrace). A call that enters between the
/// two attachments leaves a frame whose exit never comes; `attach` clears
/// the call stacks once everything is attached.
fn attach_kprobe(ebpf: &mut Ebpf, site: &ProbeSite, symbol: &str, flavour: Flavour) -> Result<()> {
    // Both loaded before either is attached: the verifier's run (long under
    // TCG) stays out of the window in which entries have no exit.
    for prefix in ["kprobe", "kretprobe"] {
        let prog: &mut KProbe = program(ebpf, &program_name(prefix, site, flavour))?.try_into()?;
        // The floor's kprobes are one program for every function: load once.
        if prog.fd().is_err() {
            prog.load().with_context(|| format!("loading {prefix} for {symbol}"))?;
        }
    }
    for prefix in ["kprobe", "kretprobe"] {
        let prog: &mut KProbe = program(ebpf, &program_name(prefix, site, flavour))?.try_into()?;
        prog.attach(symbol, 0).with_context(|| format!("attaching {prefix} to {symbol}"))?;
    }
    Ok(())
}

/// Empties every CPU's call stack: frames pushed while the probes were being
/// attached (an entry whose exit probe was not there yet) would otherwise
/// sit at the bottom of a stack for good. A call in flight now ends as one
/// counted unmatched exit; the stack's entry and match counts start here.
pub fn clear_call_stacks(ebpf: &mut Ebpf) -> Result<()> {
    let map = ebpf.map_mut("CALL_STACK").context("no CALL_STACK map")?;
    empty_call_stacks(&mut aya::maps::PerCpuArray::try_from(map)?)
}

/// `clear_call_stacks` on the map once it has been taken from the object.
pub fn empty_call_stacks<T: std::borrow::BorrowMut<aya::maps::MapData>>(
    stacks: &mut aya::maps::PerCpuArray<T, tracer_ebpf::CallStack>,
) -> Result<()> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| anyhow!("counting possible CPUs: {e}"))?;
    stacks.set(0, aya::maps::PerCpuValues::try_from(vec![tracer_ebpf::CallStack::EMPTY; cpus])?, 0)?;
    Ok(())
}

/// Attaches the calibration pair to `symbol` with `mechanism`.
pub fn attach_calibration(ebpf: &mut Ebpf, mechanism: Mechanism, symbol: &str) -> Result<()> {
    let site = &super::CALIBRATION;
    match mechanism {
        Mechanism::Kprobe => attach_kprobe(ebpf, site, symbol, Flavour::Timed),
        Mechanism::Fentry => {
            let btf = aya::Btf::from_sys_fs().context("failed to read vmlinux BTF")?;
            attach_fentry(ebpf, site, symbol, None, &btf, Flavour::Timed)
        }
        Mechanism::Bracket | Mechanism::Tracepoints => bail!("the tracepoint spans have no calibration pair"),
    }
}

/// The floor: empty entry/exit programs on the functions `sites` were
/// attached to, each with the same mechanism, in an object of their own.
/// What they add to a call is the mechanism's own cost. Dropping the
/// returned object detaches them.
pub fn attach_floor(sites: &[SiteStatus]) -> Result<Ebpf> {
    let mut ebpf = EbpfLoader::new().load(EBPF_OBJECT).context("failed to load pathcost's eBPF object")?;
    let btf = aya::Btf::from_sys_fs().context("failed to read vmlinux BTF")?;
    for s in sites {
        let (Some(mechanism), Some(symbol), Some(site)) = (s.mechanism, s.symbol.as_deref(), ProbeSite::by_name(s.site)) else {
            continue;
        };
        match mechanism {
            Mechanism::Fentry => attach_fentry(&mut ebpf, site, symbol, s.module.as_deref(), &btf, Flavour::Floor),
            Mechanism::Kprobe => attach_kprobe(&mut ebpf, site, symbol, Flavour::Floor),
            Mechanism::Bracket | Mechanism::Tracepoints => bail!("the tracepoint spans have no floor"),
        }
        .with_context(|| format!("attaching the floor to {symbol} ({mechanism})"))?;
    }
    Ok(ebpf)
}

/// The bracket's two tracepoint programs, closing one first, so no span
/// opens before something can close it.
const BRACKET_PROGRAMS: [(&str, &str); 2] = [("bracket_close", "fib_table_lookup"), ("bracket_open", "netif_receive_skb")];
/// The transit's two tracepoint programs, in the same order.
const TRANSIT_PROGRAMS: [(&str, &str); 2] = [("transit_depart", "net_dev_start_xmit"), ("transit_arrive", "netif_receive_skb")];

fn attach_tracepoints(ebpf: &mut Ebpf, programs: &[(&str, &str)]) -> Result<()> {
    for &(name, tracepoint) in programs {
        let prog: &mut RawTracePoint = program(ebpf, name)?.try_into()?;
        prog.load().with_context(|| format!("loading the {tracepoint} raw tracepoint program"))?;
        prog.attach(tracepoint).with_context(|| format!("attaching to raw tracepoint {tracepoint}"))?;
    }
    Ok(())
}

fn span_status(site: &ProbeSite, mechanism: Option<Mechanism>, notes: Vec<String>) -> SiteStatus {
    let symbol = if site.id == tracer_ebpf::SiteId::Transit {
        "net:netif_receive_skb..net:net_dev_start_xmit"
    } else {
        "net:netif_receive_skb..fib:fib_table_lookup"
    };
    SiteStatus { site: site.name, symbol: Some(symbol.into()), module: None, mechanism, notes }
}

/// Loads the programs and attaches every requested site it can.
///
/// Fails with one clear message when pathcost lacks privileges, the kernel
/// has no BTF, a site the user named explicitly is absent, or no site could
/// be attached by any mechanism.
pub fn attach(req: &AttachRequest) -> Result<AttachedProbes> {
    require_tracing_privileges()?;
    let kernel = KernelFeatures::probe();
    if !kernel.btf {
        bail!(
            "kernel {} has no BTF (/sys/kernel/btf/vmlinux is missing): pathcost reads probe \
             layouts from BTF and needs a kernel built with CONFIG_DEBUG_INFO_BTF=y",
            kernel.release
        );
    }
    let vmlinux = Btf::vmlinux()?;
    let wanted: Vec<&str> = req.sites.iter().flat_map(|s| s.symbols.iter().copied()).collect();
    let kallsyms = Kallsyms::load(&wanted)?;

    let mut cfg: ProbeConfig = layout::base_config(&vmlinux)?;
    cfg.emit_events = u32::from(req.emit_events);
    let bracket_only = req.backend == Backend::Bracket;
    if let Some(f) = req.bracket {
        cfg.bracket = layout::bracket_config(&vmlinux, f.ifindex, f.netns, f.egress_ifindex)?;
    } else if bracket_only {
        bail!("the bracket backend needs to know which packets to time (an ingress device)");
    }
    if req.transit && req.bracket.is_none_or(|f| f.ifindex == 0 || f.egress_ifindex == 0) {
        bail!("the transit needs both of the node's devices: where packets arrive and where they leave");
    }
    let mut statuses = Vec::new();
    let mut resolved = Vec::new();
    for &site in req.sites.iter().filter(|_| !bracket_only) {
        match resolve(site, &kallsyms, &vmlinux) {
            Ok(r) => {
                cfg.sites[site.id as usize] = r.layout;
                resolved.push(r);
            }
            Err(why) if req.explicit => {
                bail!("probe site {} is not available on kernel {}: {why}", site.name, kernel.release)
            }
            Err(why) => statuses.push(SiteStatus {
                site: site.name,
                symbol: None,
                module: site.module.map(str::to_owned),
                mechanism: None,
                notes: vec![format!("absent: {why}")],
            }),
        }
    }

    // On before the first program runs, so every run is counted.
    let run_stats = RunTimeStats::enable()
        .inspect_err(|why| log::warn!("{why}; the probes' own run time is not reported"))
        .ok();
    let mut ebpf = EbpfLoader::new()
        .override_global("CONFIG", &cfg, true)
        // Preallocated per CPU (3.9 KiB a key): with events nothing is
        // aggregated, so keep it at one key rather than 1 MiB per CPU.
        .map_max_entries("AGGREGATES", if req.emit_events { 1 } else { AGGREGATE_KEYS })
        .load(EBPF_OBJECT)
        .context("failed to load pathcost's eBPF object")?;
    let aya_btf = aya::Btf::from_sys_fs().ok();
    let log = match aya_log::EbpfLogger::init(&mut ebpf) {
        Ok(logger) => Some(logger),
        Err(e) => {
            log::warn!("probe diagnostics unavailable (aya-log: {e}); loss counters are still kept");
            None
        }
    };

    for r in resolved {
        let mut notes = Vec::new();
        let mut mechanism = None;
        for &m in req.backend.ladder() {
            let result = match m {
                Mechanism::Fentry => match &aya_btf {
                    Some(btf) => attach_fentry(&mut ebpf, r.site, &r.symbol, r.module.as_deref(), btf, Flavour::Timed),
                    None => Err(anyhow!("vmlinux BTF could not be parsed by aya")),
                },
                Mechanism::Kprobe if !kernel.kprobes => {
                    Err(anyhow!("kernel has no kprobes (CONFIG_KPROBES unset)"))
                }
                Mechanism::Kprobe => attach_kprobe(&mut ebpf, r.site, &r.symbol, Flavour::Timed),
                Mechanism::Bracket | Mechanism::Tracepoints => {
                    Err(anyhow!("tracepoint spans are not a per-function mechanism"))
                }
            };
            match result {
                Ok(()) => {
                    mechanism = Some(m);
                    break;
                }
                Err(e) => notes.push(format!("{m}: {e:#}")),
            }
        }
        if mechanism.is_none() && req.explicit {
            bail!(
                "could not attach to {} ({}) on kernel {}:\n  {}",
                r.site.name,
                r.symbol,
                kernel.release,
                notes.join("\n  ")
            );
        }
        statuses.push(SiteStatus {
            site: r.site.name,
            symbol: Some(r.symbol),
            module: r.module,
            mechanism,
            notes,
        });
    }

    // The tracepoint bracket: asked for, or the fallback of `auto` when no
    // function could be probed at all.
    let transit_only = req.transit && req.sites.is_empty();
    let wants_bracket = bracket_only || (req.backend == Backend::Auto && req.bracket.is_some() && !transit_only);
    if wants_bracket && !statuses.iter().any(SiteStatus::attached) {
        let why = if bracket_only { "asked for with --backend bracket" } else { "no site could be probed" };
        let attached = match crate::capabilities::bracket_unavailable_reason() {
            Some(reason) => Err(anyhow!(reason)),
            None => attach_tracepoints(&mut ebpf, &BRACKET_PROGRAMS),
        };
        match attached {
            Ok(()) => statuses.push(span_status(&super::BRACKET, Some(Mechanism::Bracket), vec![why.into()])),
            Err(e) if bracket_only => {
                bail!("the tracepoint bracket backend cannot attach on kernel {}: {e:#}", kernel.release)
            }
            Err(e) => statuses.push(span_status(&super::BRACKET, None, vec![format!("bracket: {e:#}")])),
        }
    }
    if req.transit {
        attach_tracepoints(&mut ebpf, &TRANSIT_PROGRAMS)
            .with_context(|| format!("the transit tracepoints cannot attach on kernel {}", kernel.release))?;
        statuses.push(span_status(&super::TRANSIT, Some(Mechanism::Tracepoints), vec![]));
    }

    if !statuses.iter().any(SiteStatus::attached) {
        let mut msg = format!("no probe site could be attached on kernel {}:", kernel.release);
        for s in &statuses {
            for n in &s.notes {
                msg.push_str(&format!("\n  {}: {n}", s.site));
            }
        }
        msg.push_str(
            "\npathcost needs fentry (BTF trampolines) or kprobes on the functions it times; \
             this kernel allows neither for them. Use the tracepoint bracket backend \
             (--backend bracket), run on a kernel with CONFIG_KPROBES, or in the test VM \
             (cargo xtask run)",
        );
        bail!(msg);
    }
    clear_call_stacks(&mut ebpf)?;
    statuses.sort_by_key(|s| ProbeSite::by_name(s.site).map(|p| p.id));
    Ok(AttachedProbes { ebpf, log, sites: statuses, kernel, run_stats })
}
