//! Loads a generated ruleset into the node namespace with the standard
//! tools, per kube-proxy mode, and times it (the control-plane cost).
//! Rendering and loading are separate: [`steps`] turns a cluster into the
//! tool inputs, [`program`] feeds them, and `pathcost rules` prints the same
//! steps, so what a user audits is what a sweep measured.

use std::{fmt, str::FromStr, time::{Duration, Instant}};

use anyhow::{Context as _, Result};

use super::{
    cluster::Cluster,
    ipvs::{self, IpvsOptions, Scheduler},
    iptables::{self, IptablesOptions},
    nftables,
    topology::NODE_CLIENT_SIDE,
};
use tracer_ebpf::SiteId;

use crate::{capabilities::Kallsyms, collection::Call, netns::NetNs, probes::ProbeSite};

/// A kube-proxy data-plane mode as the kernel runs it. iptables mode is
/// split by backend because legacy and nft run different kernel code
/// (`ipt_do_table` vs `nft_do_chain`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Mode {
    #[serde(rename = "iptables-legacy")]
    IptablesLegacy,
    #[serde(rename = "iptables-nft")]
    IptablesNft,
    #[serde(rename = "ipvs")]
    Ipvs,
    #[serde(rename = "nftables")]
    Nftables,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::IptablesLegacy, Mode::IptablesNft, Mode::Ipvs, Mode::Nftables];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::IptablesLegacy => "iptables-legacy",
            Mode::IptablesNft => "iptables-nft",
            Mode::Ipvs => "ipvs",
            Mode::Nftables => "nftables",
        }
    }

    /// Why this kernel cannot run the mode, or `None` when it can. Kernel
    /// modules are never loaded by pathcost (that would change the node):
    /// the code must already be in the kernel, built in or loaded, which
    /// `/proc/kallsyms` shows either way.
    pub fn unavailable_reason(self, scheduler: Scheduler) -> Option<String> {
        let needs: Vec<(String, String)> = match self {
            Mode::IptablesLegacy => vec![("ipt_do_table".into(), "ip_tables".into())],
            Mode::IptablesNft | Mode::Nftables => vec![("nft_do_chain".into(), "nf_tables".into())],
            Mode::Ipvs => vec![
                ("ip_vs_schedule".into(), "ip_vs".into()),
                (format!("ip_vs_{}_schedule", scheduler.as_str()), scheduler.kernel_module()),
                ("ip_set_get_byname".into(), "ip_set".into()),
                ("ipt_do_table".into(), "ip_tables".into()),
            ],
        };
        let names: Vec<&str> = needs.iter().map(|(sym, _)| sym.as_str()).collect();
        let kallsyms = match Kallsyms::load(&names) {
            Ok(k) => k,
            Err(e) => return Some(format!("{e:#}")),
        };
        let missing: Vec<&str> = needs
            .iter()
            .filter(|(sym, _)| kallsyms.home(sym).is_none())
            .map(|(_, module)| module.as_str())
            .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "kernel module {} is neither built in nor loaded (pathcost does not load modules: modprobe {} to measure {self})",
                missing.join(", "),
                missing.join(" ")
            )
        })
    }
}

/// The call in which a mode finds a new connection's service and backend:
/// a site at a hook, in a table and chain where the site names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lookup {
    pub site: SiteId,
    /// `NF_INET_*` hook number.
    pub hook: u8,
    /// iptables table, or nf_tables table; empty: any.
    pub table: &'static str,
    /// nf_tables chain; empty: not named by the site.
    pub chain: &'static str,
}

/// `NF_INET_PRE_ROUTING` and `NF_INET_LOCAL_IN`.
const PRE_ROUTING: u8 = 0;
const LOCAL_IN: u8 = 1;

impl Lookup {
    /// Whether `call` is this lookup (for nf_tables the call's `name` is the
    /// chain and `table` its table; for iptables `name` is the table).
    pub fn matches(&self, call: &Call) -> bool {
        if call.site != self.site || call.hook != Some(self.hook) {
            return false;
        }
        match self.site {
            SiteId::NftDoChain => call.table == self.table && call.name == self.chain,
            SiteId::IptDoTable => call.name == self.table,
            _ => true,
        }
    }

    /// What it is, for reports: e.g. `ipt_do_table nat/PREROUTING`.
    pub fn describe(&self) -> String {
        let hook = match self.hook {
            PRE_ROUTING => "PREROUTING",
            LOCAL_IN => "LOCAL_IN",
            _ => "?",
        };
        let site = ProbeSite::by_id(self.site).map_or("?", |s| s.name);
        match self.site {
            SiteId::NftDoChain => format!("{site} {} chain {} ({hook})", self.table, self.chain),
            SiteId::IptDoTable => format!("{site} {}/{hook}", self.table),
            _ => format!("{site} {hook} without its transmit"),
        }
    }
}

impl Mode {
    /// Where this mode finds the service: the `nat` table walk at
    /// PREROUTING (iptables-legacy), the nat PREROUTING chain walk
    /// (iptables-nft), kube-proxy's `nat-prerouting` chain (nftables), and
    /// the IPVS input hook at LOCAL_IN with its nested transmit taken out
    /// (IPVS forwards from inside the hook; `ip_vs_schedule` stays in).
    pub fn lookup(self) -> Lookup {
        match self {
            Mode::IptablesLegacy => Lookup { site: SiteId::IptDoTable, hook: PRE_ROUTING, table: "nat", chain: "" },
            Mode::IptablesNft => {
                Lookup { site: SiteId::NftDoChain, hook: PRE_ROUTING, table: "nat", chain: "PREROUTING" }
            }
            Mode::Nftables => {
                Lookup { site: SiteId::NftDoChain, hook: PRE_ROUTING, table: "kube-proxy", chain: "nat-prerouting" }
            }
            Mode::Ipvs => Lookup { site: SiteId::IpvsIn, hook: LOCAL_IN, table: "", chain: "" },
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL.into_iter().find(|m| m.as_str() == s).ok_or_else(|| {
            format!(
                "unknown mode '{s}' (known: {})",
                Mode::ALL.map(Mode::as_str).join(", ")
            )
        })
    }
}

/// One step of programming a mode, as data: [`program`] applies the steps
/// and `pathcost rules` prints them, so what a user reads is what the sweep
/// loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Run `tool args...` in the node namespace with `input` on stdin.
    Feed { tool: &'static str, args: &'static [&'static str], input: String },
    /// Set a sysctl in the node namespace (written to `/proc/sys`, which is
    /// what `sysctl -w` does).
    Sysctl { key: &'static str, value: &'static str },
}

impl Step {
    /// The step as a command a user could type: the program and its
    /// arguments.
    pub fn command(&self) -> (&'static str, Vec<String>) {
        match self {
            Step::Feed { tool, args, .. } => (tool, args.iter().map(|a| (*a).to_owned()).collect()),
            Step::Sysctl { key, value } => ("sysctl", vec!["-w".to_owned(), format!("{key}={value}")]),
        }
    }

    /// `tool arg...` on one line, as a header for the step's input.
    pub fn command_line(&self) -> String {
        let (tool, args) = self.command();
        std::iter::once(tool.to_owned()).chain(args).collect::<Vec<_>>().join(" ")
    }

    /// What the command gets on stdin (nothing for a sysctl).
    pub fn input(&self) -> &str {
        match self {
            Step::Feed { input, .. } => input,
            Step::Sysctl { .. } => "",
        }
    }
}

/// The steps that program `cluster` in `mode`, in the order they are applied.
pub fn steps(mode: Mode, cluster: &Cluster, scheduler: Scheduler) -> Vec<Step> {
    let feed = |tool, args, input| Step::Feed { tool, args, input };
    match mode {
        Mode::IptablesLegacy | Mode::IptablesNft => {
            let tool = if mode == Mode::IptablesLegacy { "iptables-legacy-restore" } else { "iptables-nft-restore" };
            // kube-proxy passes --noflush to keep other chains; the node
            // namespace starts empty, so the result is the same without it.
            // With it, iptables-nft-restore is superlinear: 4.7 s instead of
            // 0.6 s for 2,000 services, and over 14 minutes for 10,000 with
            // two protocols on the build host, which would make large sweeps
            // impractical. program_ms is therefore a full restore's cost.
            vec![feed(tool, &[], iptables::restore_input(cluster, &IptablesOptions::default()))]
        }
        Mode::Ipvs => {
            let rules = ipvs::ruleset(cluster, &IpvsOptions { scheduler, ..IpvsOptions::default() });
            // kube-proxy's order: the dummy and its VIPs, the ipsets, the
            // iptables glue that refers to them, then the virtual services.
            vec![
                feed("ip", &["-batch", "-"], rules.ip_batch),
                feed("ipset", &["restore"], rules.ipset_restore),
                feed("iptables-legacy-restore", &["--noflush"], rules.iptables_restore),
                feed("ipvsadm", &["-R"], rules.ipvsadm_restore),
                // As kube-proxy sets it: IPVS keeps conntrack entries so the
                // iptables glue and NAT see its connections.
                Step::Sysctl { key: "net.ipv4.vs.conntrack", value: "1" },
            ]
        }
        Mode::Nftables => vec![feed("nft", &["-f", "-"], nftables::nft_input(cluster, &[NODE_CLIENT_SIDE]))],
    }
}

/// Loads `cluster` in `mode` into `node`; returns the wall time it took
/// (rendering the inputs included, as before the steps were data).
pub fn program(mode: Mode, cluster: &Cluster, scheduler: Scheduler, node: &NetNs) -> Result<Duration> {
    let started = Instant::now();
    for step in steps(mode, cluster, scheduler) {
        match step {
            Step::Feed { tool, args, input } => {
                node.cmd_with_input(tool, args, Some(input))?;
            }
            Step::Sysctl { key, value } => node
                .sysctl(key, value)
                .with_context(|| format!("{key} is missing in the node namespace (is the module loaded?)"))?,
        }
    }
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_by_their_names_only() {
        for m in Mode::ALL {
            assert_eq!(m.as_str().parse::<Mode>().unwrap(), m);
        }
        let err = "iptables".parse::<Mode>().unwrap_err();
        assert!(err.contains("iptables-legacy, iptables-nft, ipvs, nftables"), "{err}");
    }
}
