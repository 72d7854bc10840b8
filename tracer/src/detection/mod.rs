//! Detection: what this node runs and what its kernel lets pathcost do,
//! found by reading only (`pathcost detect`, and `advise --live`).
//!
//! * [`state`] collects the raw texts (the node's own tools, `/proc`) into a
//!   [`NodeState`]; [`analyse`] judges one with the pure parsers
//!   [`iptables`], [`nftables`], [`ipvs`] and [`proxy_mode`]'s mode names.
//! * [`kernel`] judges the kernel's capabilities and every probe site.
//! * [`detect`] does both on the live node; [`table`] renders the result.
//!
//! kube-proxy's mode comes from its `/proxyMode` answer when it gives one,
//! otherwise from the state its modes leave (docs/kube-proxy-rules.md#reading-a-node):
//! nftables mode deletes the iptables and IPVS state at startup and the
//! other two delete the `kube-proxy` nftables table, so a `kube-proxy`
//! table wins; between iptables and IPVS, whichever rewrote nat
//! `KUBE-SERVICES` last is the one running. Everything else of another
//! mode is reported as a leftover. Only IPv4 iptables rules are read.

pub mod iptables;
pub mod ipvs;
pub mod kernel;
pub mod netlink;
pub mod nftables;
pub mod proxy_mode;
pub mod sources;
pub mod state;
pub mod table;

use std::fmt;

use anyhow::Result;
use serde::Serialize;

pub use kernel::{KernelCapabilities, ProbeSiteReadiness, Support};
pub use proxy_mode::KubeProxyMode;
pub use sources::{CountSource, SourcedCount};
pub use state::{CollectOptions, Input, NodeState};

use iptables::{IptablesDump, KubeIptables, ServicesShape};
use ipvs::{DummyDevice, VirtualServer};
use nftables::{NftObjects, NftablesServices};

/// Bumped whenever a field changes meaning or is removed.
pub const DETECT_SCHEMA_VERSION: u32 = 1;

/// Everything `pathcost detect` finds.
#[derive(Clone, Debug, Serialize)]
pub struct Detection {
    pub schema_version: u32,
    #[serde(flatten)]
    pub node: NodeFindings,
    /// Each service count from netlink and from the tool, compared.
    pub count_sources: Vec<SourcedCount>,
    pub kernel: KernelCapabilities,
    pub probe_sites: Vec<ProbeSiteReadiness>,
}

/// What kube-proxy left on the node, judged from a [`NodeState`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeFindings {
    pub proxy_mode: ProxyModeFinding,
    pub iptables_backend: IptablesBackend,
    pub services: ServiceCounts,
    /// State of a mode other than the active one.
    pub leftovers: Vec<Leftover>,
    /// Inputs that could not be read (tool failed or missing, permission
    /// denied, or output this version cannot parse): whatever they would
    /// have counted is unknown, not 0. Each also has a note.
    pub unreadable: Vec<UnreadableInput>,
    /// What could not be read, and oddities worth a look.
    pub notes: Vec<String>,
}

/// One input of the detection that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnreadableInput {
    /// What it would have told: `iptables-legacy rules`, `iptables-nft
    /// rules`, `nftables state`, `IPVS virtual servers`, `kube-ipvs0`,
    /// `ipsets`.
    pub input: &'static str,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModeSource {
    /// kube-proxy's own `/proxyMode` answer.
    MetricsEndpoint,
    /// The rules, devices and sets on the node.
    NodeState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProxyModeFinding {
    /// `None`: no kube-proxy mode detected.
    pub mode: Option<KubeProxyMode>,
    pub source: ModeSource,
    pub confidence: Confidence,
    /// What `/proxyMode` answered, or why it did not.
    pub endpoint: String,
    /// The state each mode left, as found.
    pub evidence: Vec<String>,
}

/// An iptables backend (docs/kube-proxy-rules.md#iptables-backends).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IptablesFlavour {
    /// x_tables, walked by `ipt_do_table`.
    Legacy,
    /// nf_tables through iptables-nft, walked by `nft_do_chain`.
    Nft,
}

impl fmt::Display for IptablesFlavour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IptablesFlavour::Legacy => "iptables-legacy",
            IptablesFlavour::Nft => "iptables-nft",
        })
    }
}

/// Which backends hold something.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backends {
    None,
    Legacy,
    Nft,
    Both,
}

impl Backends {
    fn of(legacy: bool, nft: bool) -> Backends {
        match (legacy, nft) {
            (false, false) => Backends::None,
            (true, false) => Backends::Legacy,
            (false, true) => Backends::Nft,
            (true, true) => Backends::Both,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Backends::None => "none",
            Backends::Legacy => "iptables-legacy",
            Backends::Nft => "iptables-nft",
            Backends::Both => "both iptables-legacy and iptables-nft",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IptablesBackend {
    /// Legacy IPv4 tables (`/proc/net/ip_tables_names`); `None`: unknown.
    pub legacy_tables: Option<Vec<String>>,
    /// Legacy IPv6 tables (`/proc/net/ip6_tables_names`).
    pub legacy_ip6_tables: Option<Vec<String>>,
    /// IPv4 tables iptables-nft sees; `None`: unknown.
    pub nft_tables: Option<Vec<String>>,
    /// Where kube-proxy's chains are.
    pub kube_proxy_chains_in: Backends,
    /// Where kubelet's `KUBE-IPTABLES-HINT` / `KUBE-KUBELET-CANARY` are.
    pub kubelet_hint_in: Backends,
    /// The backend kubernetes-sigs/iptables-wrapper (used by kube-proxy's
    /// image) would pick from the same state, and why.
    pub wrapper_choice: IptablesFlavour,
    pub wrapper_reason: String,
    /// The backend holding the active mode's rules (iptables and IPVS modes).
    pub active: Option<IptablesFlavour>,
}

/// kube-proxy's iptables rules in one backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IptablesServices {
    pub backend: IptablesFlavour,
    #[serde(flatten)]
    pub rules: KubeIptables,
    /// Tables this backend's save tool could not print (version skew):
    /// when not empty, the counts above miss those tables' chains.
    pub unreadable_tables: Vec<String>,
}

/// IPVS mode's objects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IpvsServices {
    /// From `/proc/net/ip_vs`; `None` when IPVS is not loaded.
    pub virtual_servers: Option<usize>,
    pub real_servers: Option<usize>,
    pub kube_ipvs0: Option<DummyDevice>,
    /// Entries of ipset KUBE-CLUSTER-IP: ClusterIP service ports.
    pub cluster_ip_set_entries: Option<usize>,
    /// kube-proxy's ipsets (`KUBE-*`).
    pub ipsets: Vec<String>,
}

/// Service and endpoint counts per mode, from the node's own rules, for
/// every mode that left state (active or not).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServiceCounts {
    /// One entry per backend holding kube-proxy chains.
    pub iptables: Vec<IptablesServices>,
    pub ipvs: Option<IpvsServices>,
    /// One entry per family with a `kube-proxy` table.
    pub nftables: Vec<NftablesServices>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Leftover {
    /// The mode that left it.
    pub mode: KubeProxyMode,
    pub what: String,
}

/// What the parsers read from a state, before any judgement.
struct Seen {
    legacy: Option<IptablesDump>,
    nft: Option<IptablesDump>,
    nft_objects: NftObjects,
    nft_tables: Vec<NftablesServices>,
    virtual_servers: Option<Vec<VirtualServer>>,
    kube_ipvs0: Option<DummyDevice>,
    ipsets: Vec<String>,
    cluster_ip_entries: Option<usize>,
    unreadable: Vec<UnreadableInput>,
    notes: Vec<String>,
}

fn lines_of(input: &Input) -> Option<Vec<String>> {
    match input {
        Input::Text(t) => Some(
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
        Input::Absent(_) => Some(Vec::new()),
        Input::Unknown(_) => None,
    }
}

impl Seen {
    fn read(state: &NodeState) -> Seen {
        let mut notes = Vec::new();
        let mut unreadable = Vec::new();
        let unknown = [
            ("iptables-legacy rules", &state.iptables_legacy_save),
            ("iptables-nft rules", &state.iptables_nft_save),
            ("nftables state", &state.nft),
            ("IPVS virtual servers", &state.ip_vs),
            ("kube-ipvs0", &state.kube_ipvs0),
            ("ipsets", &state.ipset_names),
        ];
        for (what, input) in unknown {
            if let Some(why) = input.unknown() {
                notes.push(format!("{what} unknown: {why}"));
                unreadable.push(UnreadableInput {
                    input: what,
                    reason: why.to_owned(),
                });
            }
        }
        let legacy = state.iptables_legacy_save.text().map(IptablesDump::parse);
        let nft = state.iptables_nft_save.text().map(IptablesDump::parse);
        for (what, tool, dump) in [
            ("iptables-legacy rules", "iptables-legacy-save", &legacy),
            ("iptables-nft rules", "iptables-nft-save", &nft),
        ] {
            let Some(dump) = dump.as_ref().filter(|d| !d.complete()) else {
                continue;
            };
            let reason = format!(
                "{tool} cannot print table(s) {} (rules written by nft or by a newer iptables than this one): \
                 their service counts are unknown",
                dump.unreadable_tables.join(", ")
            );
            notes.push(format!("{what} unreadable: {reason}"));
            unreadable.push(UnreadableInput {
                input: what,
                reason,
            });
        }
        let nft_objects = match state.nft.text().map(NftObjects::parse_lines) {
            Some(Ok(o)) => o,
            Some(Err(e)) => {
                notes.push(format!("nftables state unreadable: {e}"));
                unreadable.push(UnreadableInput {
                    input: "nftables state",
                    reason: e.to_string(),
                });
                NftObjects::default()
            }
            None => NftObjects::default(),
        };
        let nft_tables = nft_objects
            .kube_proxy_families()
            .iter()
            .filter_map(|f| nft_objects.kube_proxy_table(f))
            .collect();
        let kube_ipvs0 = state.kube_ipvs0.text().and_then(ipvs::parse_kube_ipvs0);
        Seen {
            legacy,
            nft,
            nft_objects,
            nft_tables,
            virtual_servers: state.ip_vs.text().map(ipvs::parse_proc_ip_vs),
            kube_ipvs0,
            ipsets: state
                .ipset_names
                .text()
                .map(ipvs::parse_kube_ipset_names)
                .unwrap_or_default(),
            cluster_ip_entries: state
                .ipset_cluster_ip
                .text()
                .and_then(ipvs::parse_ipset_entries),
            unreadable,
            notes,
        }
    }

    fn dump(&self, b: IptablesFlavour) -> Option<&IptablesDump> {
        match b {
            IptablesFlavour::Legacy => self.legacy.as_ref(),
            IptablesFlavour::Nft => self.nft.as_ref(),
        }
    }

    /// Backends with kube-proxy chains, with their footprint.
    fn kube_backends(&self) -> Vec<(IptablesFlavour, KubeIptables)> {
        [IptablesFlavour::Legacy, IptablesFlavour::Nft]
            .into_iter()
            .filter_map(|b| Some((b, self.dump(b)?.kube())))
            .filter(|(_, k)| k.has_kube_proxy_state())
            .collect()
    }

    fn virtual_server_count(&self) -> usize {
        self.virtual_servers.as_ref().map_or(0, Vec::len)
    }

    fn has_ipvs_objects(&self) -> bool {
        self.kube_ipvs0.is_some() || self.virtual_server_count() > 0 || !self.ipsets.is_empty()
    }

    /// iptables-wrapper's choice (docs/kube-proxy-rules.md#reading-a-node): nft if nft's
    /// mangle table has kubelet's hint or canary, else legacy if any legacy
    /// table has one, else nft.
    fn wrapper_choice(&self) -> (IptablesFlavour, String) {
        let marker = |d: &IptablesDump, mangle_only: bool| {
            ["KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"]
                .into_iter()
                .find(|c| {
                    if mangle_only {
                        d.has_chain("mangle", c)
                    } else {
                        d.tables.keys().any(|t| d.has_chain(t, c))
                    }
                })
        };
        if let Some(c) = self.nft.as_ref().and_then(|d| marker(d, true)) {
            return (
                IptablesFlavour::Nft,
                format!("{c} in iptables-nft's mangle table"),
            );
        }
        if let Some(c) = self.legacy.as_ref().and_then(|d| marker(d, false)) {
            return (IptablesFlavour::Legacy, format!("{c} in iptables-legacy"));
        }
        (
            IptablesFlavour::Nft,
            "no kubelet hint or canary chain in either backend: the default".to_owned(),
        )
    }
}

fn shape_mode(shape: ServicesShape) -> Option<KubeProxyMode> {
    match shape {
        ServicesShape::IptablesMode => Some(KubeProxyMode::Iptables),
        ServicesShape::IpvsMode => Some(KubeProxyMode::Ipvs),
        ServicesShape::Absent | ServicesShape::Unrecognised => None,
    }
}

fn describe_shape(shape: ServicesShape) -> &'static str {
    match shape {
        ServicesShape::Absent => "no nat KUBE-SERVICES",
        ServicesShape::IptablesMode => "nat KUBE-SERVICES written by iptables mode",
        ServicesShape::IpvsMode => "nat KUBE-SERVICES written by IPVS mode (ipset KUBE-CLUSTER-IP)",
        ServicesShape::Unrecognised => "nat KUBE-SERVICES in neither mode's shape",
    }
}

/// Judges a node's state: the mode, the iptables backend, the counts per
/// mode and what is stale.
pub fn analyse(state: &NodeState) -> NodeFindings {
    let seen = Seen::read(state);
    let mut notes = seen.notes.clone();
    let backends = seen.kube_backends();
    let (wrapper_choice, wrapper_reason) = seen.wrapper_choice();

    // Evidence, every mode's.
    let mut evidence = Vec::new();
    for t in &seen.nft_tables {
        evidence.push(format!(
            "table {} kube-proxy: {} service chains, {} endpoint chains",
            t.family, t.service_chains, t.endpoint_chains
        ));
    }
    for (b, k) in &backends {
        evidence.push(format!(
            "{b}: {} ({} rules), {} KUBE-SVC/SVL and {} KUBE-SEP chains",
            describe_shape(k.kube_services),
            k.kube_services_rules,
            k.service_ports,
            k.endpoint_chains
        ));
    }
    if let Some(d) = &seen.kube_ipvs0 {
        evidence.push(format!(
            "{} device with {} addresses",
            ipvs::KUBE_IPVS0,
            d.addresses.len()
        ));
    }
    if seen.virtual_server_count() > 0 {
        evidence.push(format!(
            "{} IPVS virtual servers",
            seen.virtual_server_count()
        ));
    }
    if !seen.ipsets.is_empty() {
        evidence.push(format!("{} KUBE-* ipsets", seen.ipsets.len()));
    }

    // The backend whose KUBE-SERVICES has `mode`'s shape (the wrapper's
    // choice when both have).
    let backend_shaped = |mode: KubeProxyMode| {
        let matching: Vec<IptablesFlavour> = backends
            .iter()
            .filter(|(_, k)| shape_mode(k.kube_services) == Some(mode))
            .map(|(b, _)| *b)
            .collect();
        match matching.as_slice() {
            [] => None,
            [one] => Some(*one),
            _ => Some(wrapper_choice),
        }
    };
    let from_state = if !seen.nft_tables.is_empty() {
        Some(KubeProxyMode::Nftables)
    } else {
        let shaped: Vec<_> = backends
            .iter()
            .filter_map(|(b, k)| Some((*b, shape_mode(k.kube_services)?)))
            .collect();
        match shaped.as_slice() {
            [] => None,
            [(_, m)] => Some(*m),
            several => several
                .iter()
                .find(|(b, _)| *b == wrapper_choice)
                .or(several.first())
                .map(|(_, m)| *m),
        }
    };

    let (mode, source, endpoint) = match &state.proxy_mode {
        Input::Text(t) => match t.trim().parse::<KubeProxyMode>() {
            Ok(m) => (
                Some(m),
                ModeSource::MetricsEndpoint,
                format!("answered {m}"),
            ),
            Err(e) => (from_state, ModeSource::NodeState, e),
        },
        Input::Absent(why) | Input::Unknown(why) => {
            (from_state, ModeSource::NodeState, why.clone())
        }
    };
    if source == ModeSource::MetricsEndpoint && from_state.is_some() && from_state != mode {
        notes.push(format!(
            "kube-proxy announces {} but the node's state looks like {}: is pathcost in the node's \
             network namespace (hostNetwork)?",
            mode.map_or("-", KubeProxyMode::as_str),
            from_state.map_or("-", KubeProxyMode::as_str)
        ));
    }
    let active_backend = match mode {
        Some(m @ (KubeProxyMode::Iptables | KubeProxyMode::Ipvs)) => backend_shaped(m),
        _ => None,
    };

    let leftovers = leftovers(mode, active_backend, &seen, &backends);
    let core_unknown = [
        &state.iptables_legacy_save,
        &state.iptables_nft_save,
        &state.nft,
    ]
    .iter()
    .any(|i| i.unknown().is_some());
    let confidence = match (source, mode) {
        (ModeSource::MetricsEndpoint, _) => Confidence::High,
        (_, None) if core_unknown => Confidence::Low,
        _ if core_unknown || !leftovers.is_empty() => Confidence::Medium,
        _ => Confidence::High,
    };

    let services = ServiceCounts {
        iptables: backends
            .iter()
            .map(|(b, k)| IptablesServices {
                backend: *b,
                rules: k.clone(),
                unreadable_tables: seen
                    .dump(*b)
                    .map(|d| d.unreadable_tables.clone())
                    .unwrap_or_default(),
            })
            .collect(),
        ipvs: seen.has_ipvs_objects().then(|| IpvsServices {
            virtual_servers: seen.virtual_servers.as_ref().map(Vec::len),
            real_servers: seen
                .virtual_servers
                .as_ref()
                .map(|v| v.iter().map(|s| s.real_servers).sum()),
            kube_ipvs0: seen.kube_ipvs0.clone(),
            cluster_ip_set_entries: seen.cluster_ip_entries,
            ipsets: seen.ipsets.clone(),
        }),
        nftables: seen.nft_tables.clone(),
    };
    if seen
        .nft_objects
        .kube_proxy_families()
        .iter()
        .any(|f| f == "ip6")
    {
        notes.push(
            "IPv6 is counted for nftables mode only; ip6tables rules are not read".to_owned(),
        );
    }

    let dump_tables = |d: &Option<IptablesDump>, input: &Input| match d {
        Some(d) => Some(d.tables.keys().cloned().collect()),
        None => input.unknown().is_none().then(Vec::new),
    };
    let kubelet_marker =
        |b: IptablesFlavour| seen.dump(b).is_some_and(|d| d.kube().has_kubelet_marker());
    NodeFindings {
        proxy_mode: ProxyModeFinding {
            mode,
            source,
            confidence,
            endpoint,
            evidence,
        },
        iptables_backend: IptablesBackend {
            legacy_tables: lines_of(&state.ip_tables_names),
            legacy_ip6_tables: lines_of(&state.ip6_tables_names),
            nft_tables: dump_tables(&seen.nft, &state.iptables_nft_save),
            kube_proxy_chains_in: Backends::of(
                backends.iter().any(|(b, _)| *b == IptablesFlavour::Legacy),
                backends.iter().any(|(b, _)| *b == IptablesFlavour::Nft),
            ),
            kubelet_hint_in: Backends::of(
                kubelet_marker(IptablesFlavour::Legacy),
                kubelet_marker(IptablesFlavour::Nft),
            ),
            wrapper_choice,
            wrapper_reason,
            active: active_backend,
        },
        services,
        leftovers,
        unreadable: seen.unreadable.clone(),
        notes,
    }
}

/// State of any mode but `mode` (and kube-proxy chains outside the active
/// backend).
fn leftovers(
    mode: Option<KubeProxyMode>,
    active_backend: Option<IptablesFlavour>,
    seen: &Seen,
    backends: &[(IptablesFlavour, KubeIptables)],
) -> Vec<Leftover> {
    let mut out = Vec::new();
    let mut add = |mode, what: String| out.push(Leftover { mode, what });
    if mode != Some(KubeProxyMode::Nftables) {
        for t in &seen.nft_tables {
            add(
                KubeProxyMode::Nftables,
                format!(
                    "table {} kube-proxy with {} service and {} endpoint chains \
                     (iptables and IPVS modes delete it when they start)",
                    t.family, t.service_chains, t.endpoint_chains
                ),
            );
        }
    }
    for (b, k) in backends {
        if Some(*b) == active_backend {
            if mode == Some(KubeProxyMode::Ipvs) && k.has_iptables_mode_chains() {
                add(
                    KubeProxyMode::Iptables,
                    format!(
                        "{} KUBE-SVC/SVL and {} KUBE-SEP chains in {b} (IPVS mode does not clean \
                         up after iptables mode)",
                        k.service_ports, k.endpoint_chains
                    ),
                );
            }
            continue;
        }
        let why = match (mode, active_backend) {
            (Some(KubeProxyMode::Nftables), _) => {
                " (nftables mode deletes them when it starts; chains in a \
                 backend it does not use survive)"
                    .to_owned()
            }
            (_, Some(active)) => format!(" (kube-proxy's rules are in {active})"),
            _ => String::new(),
        };
        add(
            shape_mode(k.kube_services).unwrap_or(KubeProxyMode::Iptables),
            format!(
                "{} kube-proxy chains in {b}: {}, {} KUBE-SVC/SVL and {} KUBE-SEP chains{why}",
                k.kube_proxy_chains,
                describe_shape(k.kube_services),
                k.service_ports,
                k.endpoint_chains
            ),
        );
    }
    if mode != Some(KubeProxyMode::Ipvs) {
        if let Some(d) = &seen.kube_ipvs0 {
            add(
                KubeProxyMode::Ipvs,
                format!(
                    "{} ({}) with {} addresses, which stay local addresses of the node",
                    ipvs::KUBE_IPVS0,
                    d.kind.as_deref().unwrap_or("unknown kind"),
                    d.addresses.len()
                ),
            );
        }
        let vs = seen.virtual_server_count();
        if vs > 0 {
            add(
                KubeProxyMode::Ipvs,
                format!("{vs} IPVS virtual servers (kube-proxy's, unless something else on the node uses IPVS)"),
            );
        }
        if !seen.ipsets.is_empty() {
            let entries = seen
                .cluster_ip_entries
                .map(|e| format!(", {} with {e} entries", ipvs::CLUSTER_IP_SET))
                .unwrap_or_default();
            add(
                KubeProxyMode::Ipvs,
                format!("{} KUBE-* ipsets{entries}", seen.ipsets.len()),
            );
        }
    }
    out
}

/// Detects on the live node with default options.
pub fn detect() -> Result<Detection> {
    detect_with(&CollectOptions::default())
}

/// Detects on the live node: kube-proxy's state in the calling thread's
/// network namespace (tools, `/proc` and netlink sockets all answer for
/// it), the kernel's capabilities and every probe site. Reads only.
pub fn detect_with(options: &CollectOptions) -> Result<Detection> {
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").ok();
    let inputs = kernel::KernelInputs::gather(kallsyms.as_deref());
    let in_kernel = |symbol: &str, module: &str| {
        inputs.symbols.as_ref().is_none_or(|s| s.has(symbol))
            || std::path::Path::new("/sys/module").join(module).exists()
    };
    let subsystems = state::Subsystems {
        nf_tables: in_kernel("nft_do_chain", "nf_tables"),
        ip_set: in_kernel("ip_set_get_byname", "ip_set"),
    };
    let state = state::collect(options, subsystems);
    let mut node = analyse(&state);
    let answers = sources::NetlinkAnswers::ask(
        subsystems,
        state.ip_vs.text().is_some(),
        options.netlink_timeout,
    );
    let count_sources = sources::compare(&mut node, &state, &answers);
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root
        && [&state.iptables_nft_save, &state.nft, &state.ip_tables_names]
            .iter()
            .any(|i| i.unknown().is_some())
    {
        node.notes.insert(
            0,
            "not running as root: the rules could not be read (run pathcost detect with sudo)"
                .to_owned(),
        );
    }
    let kernel = inputs.assess();
    if kallsyms.is_none() {
        node.notes
            .push("/proc/kallsyms unreadable: symbol checks are unknown".to_owned());
    }
    if let Some(mode) = &kernel.lockdown {
        node.notes.push(format!(
            "kernel lockdown is '{mode}': BPF programs cannot read kernel memory"
        ));
    }
    let probe_sites = kernel::probe_sites_live(inputs.symbols.as_ref(), &kernel);
    Ok(Detection {
        schema_version: DETECT_SCHEMA_VERSION,
        node,
        count_sources,
        kernel,
        probe_sites,
    })
}
