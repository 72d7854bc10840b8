//! Each service count from two sources: the kernel over netlink
//! ([`super::netlink`]) and the node's own tools (`iptables-nft-save`,
//! `nft -j`) or `/proc/net/ip_vs`. Netlink answers whatever version of
//! iptables or nft wrote the rules; a tool can fail to print rules a newer
//! one wrote (version skew). The figure reported is netlink's where the
//! kernel answered and the tool's otherwise; where both answered they are
//! compared, and a difference is said.

use std::time::Duration;

use serde::Serialize;

use super::{
    netlink, nftables::NftObjects, state::Subsystems, IptablesFlavour, NodeFindings, NodeState,
    UnreadableInput,
};

/// Who answered a count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CountSource {
    /// The kernel, over netlink.
    Netlink,
    /// The node's tools (`iptables-nft-save`, `nft -j`) or `/proc/net/ip_vs`.
    Tool,
}

impl CountSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CountSource::Netlink => "netlink",
            CountSource::Tool => "tool",
        }
    }
}

/// One count as each source gave it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourcedCount {
    /// Where it was counted, as `serve` labels it: `iptables-nft`,
    /// `nftables ip`, `nftables ip6`, `ipvs`.
    pub counted_in: String,
    /// What: `service_ports`, `endpoints`, `service_ips_elements`,
    /// `cluster_ips_elements`, `virtual_servers`.
    pub what: &'static str,
    /// `None`: that source did not answer (see `unreadable`) or was not asked.
    pub netlink: Option<usize>,
    pub tool: Option<usize>,
    /// The figure reported: netlink's when it answered, else the tool's.
    pub value: Option<usize>,
    pub answered_by: Option<CountSource>,
    /// Both answered with different figures.
    pub disagree: bool,
}

impl SourcedCount {
    fn new(
        counted_in: &str,
        what: &'static str,
        netlink: Option<usize>,
        tool: Option<usize>,
    ) -> SourcedCount {
        let answered_by = match (netlink, tool) {
            (Some(_), _) => Some(CountSource::Netlink),
            (None, Some(_)) => Some(CountSource::Tool),
            (None, None) => None,
        };
        SourcedCount {
            counted_in: counted_in.to_owned(),
            what,
            netlink,
            tool,
            value: netlink.or(tool),
            answered_by,
            disagree: matches!((netlink, tool), (Some(n), Some(t)) if n != t),
        }
    }
}

/// What the kernel answered over netlink, each part or why not.
#[derive(Debug)]
pub struct NetlinkAnswers {
    /// `None`: not asked (nf_tables not loaded: asking would load it).
    pub nf_tables: Option<Result<NftObjects, String>>,
    /// `None`: not asked (IPVS not loaded); `Some(Ok(None))`: no IPVS family.
    pub ipvs: Option<Result<Option<usize>, String>>,
}

/// The unreadable-input names of the netlink sources.
pub const NF_TABLES_NETLINK: &str = "nf_tables (netlink)";
pub const IPVS_NETLINK: &str = "IPVS (netlink)";

fn explain(e: &netlink::NetlinkError) -> String {
    if netlink::is_permission(e) {
        format!("{e} (needs CAP_NET_ADMIN)")
    } else {
        e.to_string()
    }
}

impl NetlinkAnswers {
    /// Asks the kernel, from the calling thread's network namespace. Only
    /// subsystems already loaded are asked: a netlink request to a missing
    /// one would load its module.
    pub fn ask(subsystems: Subsystems, ipvs_loaded: bool, timeout: Duration) -> NetlinkAnswers {
        NetlinkAnswers {
            nf_tables: subsystems
                .nf_tables
                .then(|| netlink::nf_tables_objects(timeout).map_err(|e| explain(&e))),
            ipvs: ipvs_loaded
                .then(|| netlink::ipvs_virtual_servers(timeout).map_err(|e| explain(&e))),
        }
    }
}

/// Sets every count beside its tool twin, and records each netlink failure
/// as an unreadable input with a note.
pub fn compare(
    findings: &mut NodeFindings,
    state: &NodeState,
    answers: &NetlinkAnswers,
) -> Vec<SourcedCount> {
    let mut out = Vec::new();
    let failed = |input: &'static str, reason: &String, findings: &mut NodeFindings| {
        findings.notes.push(format!("{input} unreadable: {reason}"));
        findings.unreadable.push(UnreadableInput {
            input,
            reason: reason.clone(),
        });
    };
    let kernel_objects = match &answers.nf_tables {
        Some(Ok(o)) => Some(o),
        Some(Err(why)) => {
            failed(NF_TABLES_NETLINK, why, findings);
            None
        }
        None => None,
    };

    // iptables-nft: the tool's count when iptables-nft-save printed every table.
    let unreadable = |input: &str| findings.unreadable.iter().any(|u| u.input == input);
    let nft_tool = if state.iptables_nft_save.text().is_some() && !unreadable("iptables-nft rules")
    {
        Some(
            findings
                .services
                .iptables
                .iter()
                .find(|t| t.backend == IptablesFlavour::Nft)
                .map_or((0, 0), |t| (t.rules.service_ports, t.rules.endpoint_chains)),
        )
    } else {
        None
    };
    let nft_kernel = kernel_objects.map(|o| netlink::iptables_nft_counts(o).unwrap_or((0, 0)));
    if nft_kernel.is_some_and(|c| c != (0, 0)) || nft_tool.is_some_and(|c| c != (0, 0)) {
        let label = IptablesFlavour::Nft.to_string();
        out.push(SourcedCount::new(
            &label,
            "service_ports",
            nft_kernel.map(|c| c.0),
            nft_tool.map(|c| c.0),
        ));
        out.push(SourcedCount::new(
            &label,
            "endpoints",
            nft_kernel.map(|c| c.1),
            nft_tool.map(|c| c.1),
        ));
    }

    // nftables mode: the kube-proxy table per family.
    let tool_readable = state.nft.text().is_some() && !unreadable("nftables state");
    let mut families: Vec<String> = findings
        .services
        .nftables
        .iter()
        .map(|t| t.family.clone())
        .collect();
    if let Some(o) = kernel_objects {
        families.extend(o.kube_proxy_families());
    }
    families.sort();
    families.dedup();
    for family in families {
        let tool = findings
            .services
            .nftables
            .iter()
            .find(|t| t.family == family);
        let tool = |f: &dyn Fn(&super::NftablesServices) -> Option<usize>| {
            if tool_readable {
                Some(tool.and_then(f).unwrap_or(0))
            } else {
                None
            }
        };
        let kernel_table = kernel_objects.map(|o| o.kube_proxy_table(&family));
        let kernel = |f: &dyn Fn(&super::NftablesServices) -> Option<usize>| {
            kernel_table
                .as_ref()
                .map(|t| t.as_ref().and_then(f).unwrap_or(0))
        };
        let label = format!("nftables {family}");
        out.push(SourcedCount::new(
            &label,
            "service_ports",
            kernel(&|t| Some(t.service_chains)),
            tool(&|t| Some(t.service_chains)),
        ));
        out.push(SourcedCount::new(
            &label,
            "endpoints",
            kernel(&|t| Some(t.endpoint_chains)),
            tool(&|t| Some(t.endpoint_chains)),
        ));
        out.push(SourcedCount::new(
            &label,
            "service_ips_elements",
            kernel(&|t| t.service_ips_elements),
            tool(&|t| t.service_ips_elements),
        ));
        out.push(SourcedCount::new(
            &label,
            "cluster_ips_elements",
            kernel(&|t| t.cluster_ips),
            tool(&|t| t.cluster_ips),
        ));
    }

    // IPVS virtual servers.
    let ipvs_tool = findings
        .services
        .ipvs
        .as_ref()
        .and_then(|i| i.virtual_servers)
        .or_else(|| state.ip_vs.text().map(|_| 0));
    let ipvs_kernel = match &answers.ipvs {
        Some(Ok(n)) => *n,
        Some(Err(why)) => {
            failed(IPVS_NETLINK, why, findings);
            None
        }
        None => None,
    };
    if ipvs_kernel.is_some() || ipvs_tool.is_some_and(|n| n > 0) {
        out.push(SourcedCount::new(
            "ipvs",
            "virtual_servers",
            ipvs_kernel,
            ipvs_tool,
        ));
    }

    for c in out.iter().filter(|c| c.disagree) {
        findings.notes.push(format!(
            "{} {}: netlink counts {} but the tool counts {} (the netlink figure is reported)",
            c.counted_in,
            c.what,
            c.netlink.unwrap_or(0),
            c.tool.unwrap_or(0)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detection::analyse;

    fn fixture(name: &str) -> NodeState {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/detection/fixtures").join(name);
        NodeState::load_dir(&dir).unwrap()
    }

    #[test]
    fn a_netlink_failure_is_unreadable_and_the_tool_answers() {
        let state = fixture("iptables-nft");
        let mut node = analyse(&state);
        let tool = node.services.iptables.iter().find(|t| t.backend == IptablesFlavour::Nft).unwrap().rules.service_ports;
        assert!(tool > 0);
        let answers = NetlinkAnswers { nf_tables: Some(Err("netlink receive failed: EPERM".into())), ipvs: None };
        let counts = compare(&mut node, &state, &answers);
        assert!(node.unreadable.iter().any(|u| u.input == NF_TABLES_NETLINK), "{:?}", node.unreadable);
        let c = counts.iter().find(|c| c.counted_in == "iptables-nft" && c.what == "service_ports").unwrap();
        assert_eq!((c.netlink, c.tool, c.value, c.answered_by), (None, Some(tool), Some(tool), Some(CountSource::Tool)));
    }

    #[test]
    fn a_difference_between_kernel_and_tool_is_said() {
        let state = fixture("iptables-nft");
        let mut node = analyse(&state);
        // The kernel holds one service chain only.
        let mut kernel = NftObjects::default();
        kernel.add_table("ip", "nat");
        kernel.add_chain("ip", "nat", "KUBE-SVC-ONLY");
        let answers = NetlinkAnswers { nf_tables: Some(Ok(kernel)), ipvs: None };
        let counts = compare(&mut node, &state, &answers);
        let c = counts.iter().find(|c| c.counted_in == "iptables-nft" && c.what == "service_ports").unwrap();
        assert_eq!((c.value, c.answered_by, c.disagree), (Some(1), Some(CountSource::Netlink), true), "{c:?}");
        assert!(node.notes.iter().any(|n| n.starts_with("iptables-nft service_ports: netlink counts 1")), "{:?}", node.notes);
    }

    #[test]
    fn netlink_wins_and_a_difference_is_flagged() {
        let c = SourcedCount::new("ipvs", "virtual_servers", Some(3), Some(2));
        assert_eq!(
            (c.value, c.answered_by, c.disagree),
            (Some(3), Some(CountSource::Netlink), true)
        );
        let c = SourcedCount::new("ipvs", "virtual_servers", None, Some(2));
        assert_eq!(
            (c.value, c.answered_by, c.disagree),
            (Some(2), Some(CountSource::Tool), false)
        );
        let c = SourcedCount::new("ipvs", "virtual_servers", None, None);
        assert_eq!((c.value, c.answered_by), (None, None));
    }
}
