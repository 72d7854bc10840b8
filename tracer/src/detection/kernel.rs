//! What this kernel offers pathcost, found by reading only: BTF, kprobes,
//! fentry (as far as reading can tell), the two tracepoints of the
//! tracepoint bracket, IPVS, netfilter BPF links, and for every probe site
//! whether its symbol resolves, where, with which BTF, and which mechanism
//! the attach ladder would try first.
//!
//! The facts are gathered once ([`KernelInputs::gather`]) and judged by pure
//! functions, so the judging is testable with made-up kernels. Nothing is
//! loaded or mounted: tracefs is used only where it is already mounted
//! (touching `/sys/kernel/debug/tracing` would automount it), and no BPF
//! program is loaded, which is why fentry can only be "likely".

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::{
    capabilities::{
        btf::Btf, kernel_release, tracefs_mount, Kallsyms, KprobeInterfaces, SymbolHome,
        BRACKET_TRACEPOINTS,
    },
    probes::{layout, Mechanism, ProbeSite, SITES},
};

/// How sure a capability is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Support {
    /// Seen directly (a file or symbol that exists only with the feature).
    Yes,
    /// Every prerequisite is there, but only attaching would prove it.
    Likely,
    No,
    /// Could not be told (a file was unreadable).
    Unknown,
}

impl Support {
    pub fn as_str(self) -> &'static str {
        match self {
            Support::Yes => "yes",
            Support::Likely => "likely",
            Support::No => "no",
            Support::Unknown => "unknown",
        }
    }

    fn usable(self) -> bool {
        matches!(self, Support::Yes | Support::Likely)
    }
}

/// A capability and what it was judged from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Capability {
    pub support: Support,
    pub evidence: String,
}

impl Capability {
    fn new(support: Support, evidence: impl Into<String>) -> Capability {
        Capability {
            support,
            evidence: evidence.into(),
        }
    }
}

/// One tracepoint of the tracepoint bracket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TracepointCapability {
    /// `net:netif_receive_skb`.
    pub name: String,
    #[serde(flatten)]
    pub exists: Capability,
    /// Its id under an already-mounted tracefs (perf-event tracepoint
    /// attach needs it; raw_tp and tp_btf attach by name and do not).
    pub tracefs_id: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Tracepoints {
    pub netif_receive_skb: TracepointCapability,
    pub fib_table_lookup: TracepointCapability,
    /// Raw tracepoint programs (raw_tp, tp_btf): CONFIG_BPF_EVENTS.
    pub raw_tracepoint_programs: Capability,
    /// Where tracefs is mounted, if it is.
    pub tracefs: Option<PathBuf>,
}

/// The kernel's side of `pathcost detect`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KernelCapabilities {
    pub release: String,
    /// vmlinux BTF; the evidence lists module BTF too.
    pub btf: Capability,
    pub kprobes: Capability,
    pub fentry: Capability,
    pub tracepoints: Tracepoints,
    pub ipvs_loaded: Capability,
    pub netfilter_bpf_link: Capability,
    /// Lockdown mode when it restricts BPF (`confidentiality`), else `None`.
    pub lockdown: Option<String>,
}

/// Where a probe site's module stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModuleState {
    BuiltIn,
    Loaded,
    NotLoaded,
}

/// Whether one probe site can be attached here, as far as reading tells.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProbeSiteReadiness {
    pub site: &'static str,
    /// The candidate symbol found in `/proc/kallsyms`.
    pub symbol: Option<String>,
    /// The module that holds it on distribution kernels (`None`: vmlinux).
    pub module: Option<&'static str>,
    /// `None` for sites in vmlinux proper.
    pub module_state: Option<ModuleState>,
    /// Where the function's BTF was found (`vmlinux`, `/sys/kernel/btf/ip_vs`).
    pub btf: Option<String>,
    /// The argument layout the programs need was read from that BTF.
    pub layout_resolves: bool,
    /// What the attach ladder (`--backend auto`) would try first and most
    /// likely keep; `None` when nothing can attach.
    pub mechanism_expected: Option<Mechanism>,
    pub notes: Vec<String>,
}

/// Kernel symbols whose presence answers a question.
mod symbols {
    /// Defined only with CONFIG_KPROBES.
    pub const KPROBES: &str = "register_kprobe";
    /// BPF trampolines (fentry/fexit), 5.5+.
    pub const TRAMPOLINE: &str = "bpf_trampoline_link_prog";
    /// ftrace direct calls, which x86 trampolines attach through.
    pub const FTRACE_DIRECT: &str = "register_ftrace_direct";
    /// Raw tracepoint BPF programs (CONFIG_BPF_EVENTS).
    pub const RAW_TP: &str = "bpf_get_raw_tracepoint";
    /// BPF_LINK_TYPE_NETFILTER (6.4+, CONFIG_NETFILTER_BPF_LINK).
    pub const NF_LINK: &str = "bpf_nf_link_attach";
    /// Present once ip_vs is loaded or built in.
    pub const IPVS: &str = "ip_vs_schedule";
    pub const NF_TABLES: &str = "nft_do_chain";
    pub const IP_SET: &str = "ip_set_get_byname";
}

fn tracepoint_symbols(event: &str) -> [String; 2] {
    // __traceiter_* is a text symbol (5.10+); __tracepoint_* is data and needs
    // CONFIG_KALLSYMS_ALL.
    [
        format!("__traceiter_{event}"),
        format!("__tracepoint_{event}"),
    ]
}

/// Every symbol name `detect` asks kallsyms about.
pub fn wanted_symbols() -> BTreeSet<String> {
    let mut wanted: BTreeSet<String> = [
        symbols::KPROBES,
        symbols::TRAMPOLINE,
        symbols::FTRACE_DIRECT,
        symbols::RAW_TP,
        symbols::NF_LINK,
        symbols::IPVS,
        symbols::NF_TABLES,
        symbols::IP_SET,
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    for (_, event) in BRACKET_TRACEPOINTS {
        wanted.extend(tracepoint_symbols(event));
    }
    wanted.extend(
        SITES
            .iter()
            .flat_map(|s| s.symbols.iter().map(|n| (*n).to_owned())),
    );
    wanted
}

/// Raw facts about the kernel, gathered by reading `/proc` and `/sys`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelInputs {
    pub release: String,
    pub vmlinux_btf: bool,
    /// Modules that publish BTF under `/sys/kernel/btf`.
    pub module_btf: Vec<String>,
    /// `None` when `/proc/kallsyms` could not be read.
    pub symbols: Option<Kallsyms>,
    /// Where kprobes could be created: the facts attach decides from too.
    pub kprobes: KprobeInterfaces,
    /// `kernel.ftrace_enabled` (`None`: no such sysctl, no function tracer).
    pub ftrace_enabled: Option<bool>,
    pub tracefs: Option<PathBuf>,
    /// Tracepoint ids read from the mounted tracefs, by event name.
    pub tracepoint_ids: BTreeMap<String, u64>,
    /// `/sys/module/ip_vs` exists.
    pub ip_vs_module: bool,
    /// `/proc/net/ip_vs` exists (ip_vs loaded or built in).
    pub proc_ip_vs: bool,
    /// A loadable ip_vs module under `/lib/modules/<release>`.
    pub ip_vs_module_file: Option<PathBuf>,
    /// `/sys/kernel/security/lockdown`'s active mode.
    pub lockdown: Option<String>,
}

fn find_module_file(release: &str, name: &str) -> Option<PathBuf> {
    let dir = Path::new("/lib/modules")
        .join(release)
        .join("kernel/net/netfilter/ipvs");
    ["ko", "ko.xz", "ko.zst", "ko.gz"]
        .iter()
        .map(|ext| dir.join(format!("{name}.{ext}")))
        .find(|p| p.exists())
}

impl KernelInputs {
    /// Reads the facts from this machine; `kallsyms` is `/proc/kallsyms`'s
    /// text (read once by the caller and shared).
    pub fn gather(kallsyms: Option<&str>) -> KernelInputs {
        let release = kernel_release();
        let tracefs = tracefs_mount();
        let mut tracepoint_ids = BTreeMap::new();
        if let Some(t) = &tracefs {
            for (category, event) in BRACKET_TRACEPOINTS {
                let id = fs::read_to_string(t.join("events").join(category).join(event).join("id"));
                if let Some(id) = id.ok().and_then(|s| s.trim().parse().ok()) {
                    tracepoint_ids.insert(event.to_owned(), id);
                }
            }
        }
        let lockdown = fs::read_to_string("/sys/kernel/security/lockdown")
            .ok()
            .and_then(|s| {
                // "none [integrity] confidentiality": the bracketed word is active.
                let active = s.split_whitespace().find(|w| w.starts_with('['))?;
                Some(active.trim_matches(|c| c == '[' || c == ']').to_owned())
            });
        KernelInputs {
            vmlinux_btf: Path::new("/sys/kernel/btf/vmlinux").exists(),
            module_btf: Btf::module_names().unwrap_or_default(),
            symbols: kallsyms.map(|text| {
                let wanted = wanted_symbols();
                Kallsyms::parse(text, &wanted.iter().map(String::as_str).collect::<Vec<_>>())
            }),
            kprobes: KprobeInterfaces::read(tracefs.as_deref()),
            ftrace_enabled: fs::read_to_string("/proc/sys/kernel/ftrace_enabled")
                .ok()
                .map(|s| s.trim() != "0"),
            tracepoint_ids,
            tracefs,
            ip_vs_module: Path::new("/sys/module/ip_vs").exists(),
            proc_ip_vs: Path::new("/proc/net/ip_vs").exists(),
            ip_vs_module_file: find_module_file(&release, "ip_vs"),
            lockdown,
            release,
        }
    }

    fn has(&self, symbol: &str) -> Option<bool> {
        self.symbols.as_ref().map(|s| s.has(symbol))
    }

    /// Judges the capabilities from the facts.
    pub fn assess(&self) -> KernelCapabilities {
        KernelCapabilities {
            release: self.release.clone(),
            btf: self.btf(),
            kprobes: self.kprobes(),
            fentry: self.fentry(),
            tracepoints: Tracepoints {
                netif_receive_skb: self.tracepoint("net", "netif_receive_skb"),
                fib_table_lookup: self.tracepoint("fib", "fib_table_lookup"),
                raw_tracepoint_programs: match self.has(symbols::RAW_TP) {
                    Some(true) => {
                        Capability::new(Support::Yes, "bpf_get_raw_tracepoint in /proc/kallsyms")
                    }
                    Some(false) => Capability::new(
                        Support::No,
                        "no bpf_get_raw_tracepoint (CONFIG_BPF_EVENTS unset)",
                    ),
                    None => Capability::new(Support::Unknown, "/proc/kallsyms unreadable"),
                },
                tracefs: self.tracefs.clone(),
            },
            ipvs_loaded: self.ipvs(),
            netfilter_bpf_link: match self.has(symbols::NF_LINK) {
                Some(true) => Capability::new(Support::Yes, "bpf_nf_link_attach in /proc/kallsyms"),
                Some(false) => Capability::new(
                    Support::No,
                    "no bpf_nf_link_attach (kernel before 6.4 or CONFIG_NETFILTER_BPF_LINK unset)",
                ),
                None => Capability::new(Support::Unknown, "/proc/kallsyms unreadable"),
            },
            lockdown: self.lockdown.clone().filter(|m| m == "confidentiality"),
        }
    }

    fn btf(&self) -> Capability {
        if !self.vmlinux_btf {
            return Capability::new(
                Support::No,
                "no /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF unset)",
            );
        }
        let modules = match self.module_btf.len() {
            0 => "no module BTF (modules built in, none loaded, or CONFIG_DEBUG_INFO_BTF_MODULES unset)".to_owned(),
            n => format!("module BTF for {n} modules"),
        };
        Capability::new(Support::Yes, format!("/sys/kernel/btf/vmlinux; {modules}"))
    }

    /// Whether kprobes are usable is [`KprobeInterfaces::usable`], the
    /// decision attach makes; the symbol only words why not.
    fn kprobes(&self) -> Capability {
        if self.kprobes.usable() {
            return Capability::new(
                Support::Yes,
                if self.kprobes.pmu {
                    "kprobe PMU (/sys/bus/event_source/devices/kprobe)"
                } else {
                    "kprobe_events in tracefs"
                },
            );
        }
        match self.has(symbols::KPROBES) {
            Some(false) => Capability::new(
                Support::No,
                "CONFIG_KPROBES unset: no register_kprobe in /proc/kallsyms, no kprobe PMU",
            ),
            Some(true) => Capability::new(
                Support::No,
                "kprobes are built, but there is no kprobe PMU (CONFIG_KPROBE_EVENTS unset?)",
            ),
            None => Capability::new(Support::No, "no kprobe PMU (/proc/kallsyms unreadable)"),
        }
    }

    fn fentry(&self) -> Capability {
        if !self.vmlinux_btf {
            return Capability::new(Support::No, "needs vmlinux BTF, which is missing");
        }
        if self.ftrace_enabled == Some(false) {
            return Capability::new(Support::No, "kernel.ftrace_enabled is 0");
        }
        match (
            self.has(symbols::TRAMPOLINE),
            self.has(symbols::FTRACE_DIRECT),
        ) {
            (None, _) | (_, None) => Capability::new(Support::Unknown, "/proc/kallsyms unreadable"),
            (Some(false), _) => Capability::new(
                Support::No,
                "no BPF trampolines (no bpf_trampoline_link_prog)",
            ),
            (Some(true), Some(false)) => Capability::new(
                Support::Likely,
                "BTF and BPF trampolines present, but no ftrace direct calls \
                 (register_ftrace_direct), which x86 trampolines need; unverified",
            ),
            (Some(true), Some(true)) => Capability::new(
                Support::Likely,
                "BTF, BPF trampolines and ftrace direct calls present; unverified: only \
                 loading an fentry program proves it, and some kernels refuse it (EPERM)",
            ),
        }
    }

    fn tracepoint(&self, category: &str, event: &str) -> TracepointCapability {
        let name = format!("{category}:{event}");
        let tracefs_id = self.tracepoint_ids.get(event).copied();
        let [iter_sym, tp_sym] = tracepoint_symbols(event);
        let exists = match (self.symbols.as_ref(), tracefs_id) {
            (_, Some(id)) => Capability::new(Support::Yes, format!("tracefs id {id}")),
            (Some(s), None) if s.has(&iter_sym) || s.has(&tp_sym) => {
                let sym = if s.has(&iter_sym) { iter_sym } else { tp_sym };
                let tracefs = if self.tracefs.is_some() {
                    "not in the mounted tracefs"
                } else {
                    "tracefs not mounted: raw_tp/tp_btf attach by name, perf-event attach needs it"
                };
                Capability::new(Support::Yes, format!("{sym} in /proc/kallsyms; {tracefs}"))
            }
            (Some(_), None) if self.tracefs.is_some() => {
                Capability::new(Support::No, "neither in tracefs nor in /proc/kallsyms")
            }
            // Before 5.10 only data symbols mark tracepoints, and those need
            // CONFIG_KALLSYMS_ALL: absence proves nothing without tracefs.
            _ => Capability::new(
                Support::Unknown,
                format!("no {iter_sym} in /proc/kallsyms and tracefs not mounted"),
            ),
        };
        TracepointCapability {
            name,
            exists,
            tracefs_id,
        }
    }

    fn ipvs(&self) -> Capability {
        if self.ip_vs_module {
            return Capability::new(Support::Yes, "module ip_vs loaded (/sys/module/ip_vs)");
        }
        if self.proc_ip_vs || self.has(symbols::IPVS) == Some(true) {
            return Capability::new(Support::Yes, "ip_vs built in (/proc/net/ip_vs)");
        }
        let evidence = match &self.ip_vs_module_file {
            Some(p) => format!("ip_vs not loaded (module available: {})", p.display()),
            None => "ip_vs not loaded and no ip_vs module for this kernel".to_owned(),
        };
        Capability::new(Support::No, evidence)
    }
}

/// What attach's BTF lookup finds for a resolved symbol: the BTF's name
/// and whether the argument layout resolves, or why not.
pub type LayoutCheck = Result<String, String>;

/// Checks a site's BTF and layout the way attach does. `vmlinux` is `None`
/// when the kernel has no BTF.
pub fn check_layout(
    site: &ProbeSite,
    symbol: &str,
    home: &SymbolHome,
    vmlinux: Option<&Btf>,
) -> LayoutCheck {
    let vmlinux = vmlinux.ok_or("no vmlinux BTF")?;
    let (origin, module_btf);
    let btf = match home {
        SymbolHome::Vmlinux => {
            origin = "vmlinux".to_owned();
            vmlinux
        }
        SymbolHome::Module(m) => {
            module_btf = Btf::module(m, vmlinux).map_err(|e| e.to_string())?;
            origin = format!("/sys/kernel/btf/{m}");
            &module_btf
        }
    };
    layout::site_layout(site.id, symbol, btf).map_err(|e| format!("{origin}: {e:#}"))?;
    Ok(origin)
}

/// Judges every probe site. `layout` checks a resolved symbol's BTF (see
/// [`check_layout`]); tests pass a stand-in.
pub fn probe_sites(
    kallsyms: &Kallsyms,
    caps: &KernelCapabilities,
    sys_module: impl Fn(&str) -> bool,
    layout: impl Fn(&ProbeSite, &str, &SymbolHome) -> LayoutCheck,
) -> Vec<ProbeSiteReadiness> {
    SITES
        .iter()
        .map(|site| {
            let mut notes = Vec::new();
            let found = site
                .symbols
                .iter()
                .find_map(|s| kallsyms.home(s).map(|h| (*s, h.clone())));
            let module_state = site.module.map(|m| match &found {
                Some((_, SymbolHome::Vmlinux)) => ModuleState::BuiltIn,
                Some((_, SymbolHome::Module(_))) => ModuleState::Loaded,
                None if sys_module(m) => ModuleState::Loaded,
                None => ModuleState::NotLoaded,
            });
            let Some((symbol, home)) = found else {
                notes.push(match (site.module, module_state) {
                    (Some(m), Some(ModuleState::NotLoaded)) => {
                        format!("absent: module {m} is not loaded")
                    }
                    _ => format!("absent: no {} in /proc/kallsyms", site.symbols.join(" or ")),
                });
                return ProbeSiteReadiness {
                    site: site.name,
                    symbol: None,
                    module: site.module,
                    module_state,
                    btf: None,
                    layout_resolves: false,
                    mechanism_expected: None,
                    notes,
                };
            };
            let (btf, layout_resolves) = match layout(site, symbol, &home) {
                Ok(origin) => (Some(origin), true),
                Err(why) => {
                    notes.push(format!("layout: {why}"));
                    (None, false)
                }
            };
            let in_vmlinux = home == SymbolHome::Vmlinux;
            let mechanism_expected = if !layout_resolves {
                None
            } else if in_vmlinux && caps.fentry.support.usable() {
                if caps.fentry.support == Support::Likely {
                    notes.push("fentry unverified until attached".to_owned());
                }
                if caps.kprobes.support != Support::Yes {
                    notes.push("no kprobe fallback".to_owned());
                }
                Some(Mechanism::Fentry)
            } else if caps.kprobes.support == Support::Yes {
                if !in_vmlinux {
                    // aya 0.14 resolves fentry targets in vmlinux BTF only.
                    notes
                        .push("module function: kprobe (fentry needs a vmlinux target)".to_owned());
                }
                Some(Mechanism::Kprobe)
            } else {
                notes.push(if in_vmlinux {
                    "neither fentry nor kprobes available".to_owned()
                } else {
                    "module function without kprobes: fentry on modules is not supported".to_owned()
                });
                None
            };
            ProbeSiteReadiness {
                site: site.name,
                symbol: Some(symbol.to_owned()),
                module: site.module,
                module_state,
                btf,
                layout_resolves,
                mechanism_expected,
                notes,
            }
        })
        .collect()
}

/// The live version of [`probe_sites`]: the symbols [`KernelInputs`] read
/// (`None`: kallsyms unreadable, so no site resolves), BTF from
/// `/sys/kernel/btf`.
pub fn probe_sites_live(
    kallsyms: Option<&Kallsyms>,
    caps: &KernelCapabilities,
) -> Vec<ProbeSiteReadiness> {
    let unreadable = Kallsyms::default();
    let vmlinux = Btf::vmlinux().ok();
    probe_sites(
        kallsyms.unwrap_or(&unreadable),
        caps,
        |m| Path::new("/sys/module").join(m).exists(),
        |site, symbol, home| check_layout(site, symbol, home, vmlinux.as_ref()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_like() -> KernelInputs {
        // The CI host: BTF, no kprobes, trampolines present, no IPVS, no
        // tracefs mounted, everything netfilter built in.
        KernelInputs {
            release: "6.18.0-test".into(),
            vmlinux_btf: true,
            symbols: Some(Kallsyms::from_functions(&[
                ("bpf_trampoline_link_prog", None),
                ("register_ftrace_direct", None),
                ("bpf_get_raw_tracepoint", None),
                ("bpf_nf_link_attach", None),
                ("__traceiter_netif_receive_skb", None),
                ("__traceiter_fib_table_lookup", None),
            ])),
            ftrace_enabled: Some(true),
            ..KernelInputs::default()
        }
    }

    #[test]
    fn host_like_kernel_has_no_kprobes_and_likely_fentry() {
        let caps = host_like().assess();
        assert_eq!(caps.btf.support, Support::Yes);
        assert_eq!(caps.kprobes.support, Support::No);
        assert!(
            caps.kprobes.evidence.contains("CONFIG_KPROBES"),
            "{}",
            caps.kprobes.evidence
        );
        assert_eq!(caps.fentry.support, Support::Likely);
        assert_eq!(
            caps.tracepoints.netif_receive_skb.exists.support,
            Support::Yes
        );
        assert_eq!(
            caps.tracepoints.fib_table_lookup.exists.support,
            Support::Yes
        );
        assert_eq!(
            caps.tracepoints.raw_tracepoint_programs.support,
            Support::Yes
        );
        assert_eq!(caps.ipvs_loaded.support, Support::No);
        assert_eq!(caps.netfilter_bpf_link.support, Support::Yes);
    }

    #[test]
    fn vm_like_kernel_with_kprobes_and_ipvs_module() {
        let mut k = host_like();
        k.kprobes.pmu = true;
        k.ip_vs_module = true;
        k.tracefs = Some("/sys/kernel/tracing".into());
        k.tracepoint_ids.insert("netif_receive_skb".into(), 1234);
        k.symbols = Some(Kallsyms::from_functions(&[
            ("register_kprobe", None),
            ("ip_vs_schedule", Some("ip_vs")),
        ]));
        let caps = k.assess();
        assert_eq!(caps.kprobes.support, Support::Yes);
        assert_eq!(caps.ipvs_loaded.support, Support::Yes);
        assert_eq!(caps.fentry.support, Support::No);
        assert_eq!(caps.tracepoints.netif_receive_skb.tracefs_id, Some(1234));
        // tracefs is mounted and lists no fib_table_lookup, kallsyms neither.
        assert_eq!(
            caps.tracepoints.fib_table_lookup.exists.support,
            Support::No
        );
    }

    #[test]
    fn old_kernel_without_traceiter_or_tracefs_is_unknown_not_absent() {
        let mut k = host_like();
        k.symbols = Some(Kallsyms::default());
        let caps = k.assess();
        assert_eq!(
            caps.tracepoints.netif_receive_skb.exists.support,
            Support::Unknown
        );
        let mut k = host_like();
        k.vmlinux_btf = false;
        assert_eq!(k.assess().fentry.support, Support::No);
        assert_eq!(k.assess().btf.support, Support::No);
    }

    /// On this machine, `detect` says kprobes exist exactly when `attach`
    /// would try them.
    #[test]
    fn detect_and_attach_agree_on_kprobes_here() {
        let detect = KernelInputs::gather(None).assess().kprobes.support == Support::Yes;
        assert_eq!(detect, crate::capabilities::KernelFeatures::probe().kprobes);
    }

    #[test]
    fn probe_sites_follow_the_attach_ladder() {
        let kallsyms = Kallsyms::parse(
            "ffffffff81000000 T nf_hook_slow\n\
             ffffffffc0002000 T ipt_do_table\t[ip_tables]\n\
             ffffffffc0003000 t ip_vs_in_hook\t[ip_vs]\n",
            &[
                "nf_hook_slow",
                "ipt_do_table",
                "ip_vs_in_hook",
                "ip_vs_schedule",
                "nft_do_chain",
            ],
        );
        let ok = |_: &ProbeSite, _: &str, h: &SymbolHome| match h {
            SymbolHome::Vmlinux => Ok("vmlinux".to_owned()),
            SymbolHome::Module(m) => Ok(format!("/sys/kernel/btf/{m}")),
        };
        // Host-like: fentry likely, no kprobes.
        let host = host_like().assess();
        let sites = probe_sites(&kallsyms, &host, |_| false, ok);
        let by = |name: &str| sites.iter().find(|s| s.site == name).unwrap().clone();
        assert_eq!(
            by("nf_hook_slow").mechanism_expected,
            Some(Mechanism::Fentry)
        );
        assert_eq!(by("ipt_do_table").mechanism_expected, None);
        assert_eq!(by("ipt_do_table").module_state, Some(ModuleState::Loaded));
        assert_eq!(by("ip_vs_in").symbol.as_deref(), Some("ip_vs_in_hook"));
        let nft = by("nft_do_chain");
        assert_eq!(
            (nft.symbol, nft.module_state),
            (None, Some(ModuleState::NotLoaded))
        );
        assert!(
            nft.notes[0].contains("module nf_tables is not loaded"),
            "{:?}",
            nft.notes
        );
        // With kprobes, module functions get kprobes.
        let mut vm = host_like();
        vm.kprobes.pmu = true;
        let sites = probe_sites(&kallsyms, &vm.assess(), |_| false, ok);
        let ipt = sites.iter().find(|s| s.site == "ipt_do_table").unwrap();
        assert_eq!(ipt.mechanism_expected, Some(Mechanism::Kprobe));
        assert_eq!(ipt.btf.as_deref(), Some("/sys/kernel/btf/ip_tables"));
        // A layout that does not resolve means no attach at all.
        let bad = |_: &ProbeSite, _: &str, _: &SymbolHome| Err("BTF has no prototype".to_owned());
        let sites = probe_sites(&kallsyms, &vm.assess(), |_| false, bad);
        assert!(sites.iter().all(|s| s.mechanism_expected.is_none()));
    }
}
