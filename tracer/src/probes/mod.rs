//! The probe sites pathcost times, and how each is found on the running
//! kernel: which symbol, in which module, and where its arguments live
//! (read from BTF, never assumed).

pub mod attach;
pub mod layout;

use std::{fmt, str::FromStr};

use tracer_ebpf::SiteId;

/// A kernel function pathcost can time, with the symbols that implement it
/// across kernel versions (best first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeSite {
    pub id: SiteId,
    /// Name users type in `--sites` and see in reports.
    pub name: &'static str,
    /// Candidate kernel symbols, newest kernels first.
    pub symbols: &'static [&'static str],
    /// Module that holds the symbol on distribution kernels (its BTF lives in
    /// `/sys/kernel/btf/<module>`), or `None` for vmlinux.
    pub module: Option<&'static str>,
    /// Attached when the user names no sites.
    pub default: bool,
    /// Program name stem: programs are `kprobe_<stem>`, `kretprobe_<stem>`,
    /// `fentry_<stem>` and `fexit_<stem>` (see tracer-ebpf).
    pub program_stem: &'static str,
}

pub const SITES: [ProbeSite; 7] = [
    ProbeSite {
        id: SiteId::NfHookSlow,
        name: "nf_hook_slow",
        symbols: &["nf_hook_slow"],
        module: None,
        default: true,
        program_stem: "nf_hook_slow",
    },
    ProbeSite {
        id: SiteId::IptDoTable,
        name: "ipt_do_table",
        symbols: &["ipt_do_table"],
        module: Some("ip_tables"),
        default: true,
        program_stem: "ipt_do_table",
    },
    ProbeSite {
        id: SiteId::NftDoChain,
        name: "nft_do_chain",
        symbols: &["nft_do_chain"],
        module: Some("nf_tables"),
        default: true,
        program_stem: "nft_do_chain",
    },
    ProbeSite {
        id: SiteId::IpvsIn,
        name: "ip_vs_in",
        // Renamed in 5.16 ("netfilter: ipvs: prepare for hook function reduction").
        symbols: &["ip_vs_in_hook", "ip_vs_in"],
        module: Some("ip_vs"),
        default: true,
        program_stem: "ipvs_in",
    },
    ProbeSite {
        id: SiteId::IpvsSchedule,
        name: "ip_vs_schedule",
        symbols: &["ip_vs_schedule"],
        module: Some("ip_vs"),
        default: true,
        program_stem: "ipvs_schedule",
    },
    ProbeSite {
        id: SiteId::IpvsConnInGet,
        name: "ip_vs_conn_in_get",
        symbols: &["ip_vs_conn_in_get"],
        module: Some("ip_vs"),
        default: false,
        program_stem: "ipvs_conn_in_get",
    },
    ProbeSite {
        id: SiteId::IpvsXmit,
        name: "ip_vs_nat_xmit",
        // IPVS's NAT (masquerade) forwarding, what kube-proxy's IPVS mode
        // uses. It runs inside the input hook: timing it as a nested site
        // lets the hook's lookup exclude the forwarding (re-route,
        // LOCAL_OUT, POSTROUTING, transmit), probed parts or not.
        symbols: &["ip_vs_nat_xmit"],
        module: Some("ip_vs"),
        default: true,
        program_stem: "ipvs_xmit",
    },
];

/// Not a measured site: the function whose probed and unprobed run times
/// give the probes' own cost (see `collection::calibration`).
pub const CALIBRATION: ProbeSite = ProbeSite {
    id: SiteId::Calibration,
    name: "calibration",
    symbols: &[],
    module: None,
    default: false,
    program_stem: "calibration",
};

/// Not a function: the tracepoint bracket around the PREROUTING hooks
/// (`net:netif_receive_skb` to `fib:fib_table_lookup`), for kernels where
/// neither fentry nor kprobes work.
pub const BRACKET: ProbeSite = ProbeSite {
    id: SiteId::Bracket,
    name: "prerouting_bracket",
    symbols: &[],
    module: None,
    default: false,
    program_stem: "bracket",
};

/// Not a function: the transit of a forwarded packet through the node,
/// from `net:netif_receive_skb` on the client-facing device to
/// `net:net_dev_start_xmit` of the same skb on the backend-facing device.
/// The same span in every mode, whichever hook finds the service.
pub const TRANSIT: ProbeSite = ProbeSite {
    id: SiteId::Transit,
    name: "transit",
    symbols: &[],
    module: None,
    default: false,
    program_stem: "transit",
};

impl ProbeSite {
    /// Any site by id, including the calibration target and the tracepoint spans.
    pub fn by_id(id: SiteId) -> Option<&'static ProbeSite> {
        SITES.iter().chain([&CALIBRATION, &BRACKET, &TRANSIT]).find(|s| s.id == id)
    }

    pub fn by_name(name: &str) -> Option<&'static ProbeSite> {
        SITES
            .iter()
            .find(|s| s.name == name || s.symbols.contains(&name))
    }

    pub fn all_names() -> String {
        SITES.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
    }
}

/// How a site's entry and exit are observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mechanism {
    /// BPF trampolines: lowest overhead, needs BTF and unlocked ftrace.
    Fentry,
    /// kprobe + kretprobe: works on any kernel with CONFIG_KPROBES.
    Kprobe,
    /// Two tracepoints bracketing the PREROUTING hooks: coarser (it times
    /// the hooks together, plus the IP receive path), but needs neither.
    Bracket,
    /// Two tracepoints around a forwarded packet's whole transit (the
    /// transit span): arrival on one device to departure on the other.
    Tracepoints,
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mechanism::Fentry => "fentry",
            Mechanism::Kprobe => "kprobe",
            Mechanism::Bracket => "bracket",
            Mechanism::Tracepoints => "tracepoints",
        })
    }
}

/// Which mechanisms the user allows (`--backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Best that works per site: fentry, then kprobe; the tracepoint
    /// bracket where neither works at all.
    #[default]
    Auto,
    /// fentry/fexit only.
    Fentry,
    /// kprobe/kretprobe only.
    Kprobe,
    /// Only the tracepoint bracket around PREROUTING (net:netif_receive_skb
    /// to fib:fib_table_lookup): coarser, works without kprobes or fentry.
    Bracket,
}

impl Backend {
    /// The name `--backend` takes and serde writes (results' `settings`).
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Fentry => "fentry",
            Backend::Kprobe => "kprobe",
            Backend::Bracket => "bracket",
        }
    }

    pub fn ladder(self) -> &'static [Mechanism] {
        match self {
            Backend::Auto => &[Mechanism::Fentry, Mechanism::Kprobe],
            Backend::Fentry => &[Mechanism::Fentry],
            Backend::Kprobe => &[Mechanism::Kprobe],
            Backend::Bracket => &[],
        }
    }
}

/// A `--sites` list: site names separated by commas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteList(pub Vec<&'static ProbeSite>);

impl FromStr for SiteList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut sites = Vec::new();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let site = ProbeSite::by_name(name).ok_or_else(|| {
                format!("unknown probe site '{name}' (known: {})", ProbeSite::all_names())
            })?;
            if !sites.contains(&site) {
                sites.push(site);
            }
        }
        if sites.is_empty() {
            return Err(format!("no probe site given (known: {})", ProbeSite::all_names()));
        }
        Ok(SiteList(sites))
    }
}

/// Netfilter hook names by `NF_INET_*` number.
pub fn hook_name(hook: u8) -> &'static str {
    match hook {
        0 => "PRE_ROUTING",
        1 => "LOCAL_IN",
        2 => "FORWARD",
        3 => "LOCAL_OUT",
        4 => "POST_ROUTING",
        _ => "-",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_lists_parse_names_and_symbols_and_reject_unknown() {
        let l: SiteList = "nf_hook_slow, ip_vs_in_hook,nf_hook_slow".parse().unwrap();
        assert_eq!(l.0.len(), 2);
        assert_eq!(l.0[1].id, SiteId::IpvsIn);
        let err = "nf_hook_slow,bogus".parse::<SiteList>().unwrap_err();
        assert!(err.contains("unknown probe site 'bogus'"), "{err}");
        assert!("".parse::<SiteList>().is_err());
    }

    #[test]
    fn every_site_is_reachable_by_id() {
        for s in &SITES {
            assert_eq!(ProbeSite::by_id(s.id), Some(s));
        }
    }
}
