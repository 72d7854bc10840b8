//! Reads `iptables-save` output (either backend prints the same format) and
//! tells what kube-proxy and kubelet left in it: which mode shaped nat
//! `KUBE-SERVICES`, how many service ports and endpoints have chains, and
//! where the kubelet's backend hint lives (docs/kube-proxy-rules.md#iptables-mode,
//! docs/kube-proxy-rules.md#ipvs-iptables-glue, docs/kube-proxy-rules.md#reading-a-node).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// One `iptables-save` dump: tables by name, each with its chains (built-in
/// and user) and their rules in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IptablesDump {
    pub tables: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    /// iptables-nft-save's `# Warning: iptables-legacy tables present` line.
    pub legacy_tables_warning: bool,
    /// Tables the tool could not print: iptables-nft-save says
    /// ``# Table `nat' is incompatible, use 'nft' tool.`` and prints none of
    /// the table's chains when the table holds expressions its version does
    /// not know (written by `nft`, or by a newer iptables than the image's).
    /// Counting such a table would report 0 where there may be thousands.
    pub unreadable_tables: Vec<String>,
}

impl IptablesDump {
    /// Parses `iptables-save` text. Lines it does not understand are skipped:
    /// the counts below only need chain declarations and `-A` rules.
    pub fn parse(text: &str) -> IptablesDump {
        let mut dump = IptablesDump::default();
        let mut table: Option<String> = None;
        for line in text.lines() {
            let line = line.trim_end();
            if let Some(comment) = line.strip_prefix('#') {
                if comment.contains("iptables-legacy tables present") {
                    dump.legacy_tables_warning = true;
                }
                if let Some(table) = incompatible_table(comment) {
                    dump.unreadable_tables.push(table.to_owned());
                }
                continue;
            }
            if let Some(name) = line.strip_prefix('*') {
                dump.tables.entry(name.to_owned()).or_default();
                table = Some(name.to_owned());
            } else if line == "COMMIT" {
                table = None;
            } else if let (Some(t), Some(decl)) = (&table, line.strip_prefix(':')) {
                if let Some(chain) = decl.split_whitespace().next() {
                    dump.chains_mut(t).entry(chain.to_owned()).or_default();
                }
            } else if let (Some(t), Some(rule)) = (&table, line.strip_prefix("-A ")) {
                let (chain, rest) = rule.split_once(' ').unwrap_or((rule, ""));
                dump.chains_mut(t)
                    .entry(chain.to_owned())
                    .or_default()
                    .push(rest.to_owned());
            }
        }
        dump
    }

    /// True when every table was printed in full.
    pub fn complete(&self) -> bool {
        self.unreadable_tables.is_empty()
    }

    fn chains_mut(&mut self, table: &str) -> &mut BTreeMap<String, Vec<String>> {
        self.tables.entry(table.to_owned()).or_default()
    }

    pub fn chain(&self, table: &str, chain: &str) -> Option<&[String]> {
        self.tables.get(table)?.get(chain).map(Vec::as_slice)
    }

    pub fn has_chain(&self, table: &str, chain: &str) -> bool {
        self.chain(table, chain).is_some()
    }

    fn chains_in_any_table(&self, chain: &str) -> bool {
        self.tables.values().any(|t| t.contains_key(chain))
    }

    /// What kube-proxy and kubelet left in this dump.
    pub fn kube(&self) -> KubeIptables {
        let nat = self.tables.get("nat");
        let nat_chains = || nat.into_iter().flat_map(|t| t.keys());
        let kube_services = self.chain("nat", "KUBE-SERVICES");
        let shape = kube_services.map_or(ServicesShape::Absent, ServicesShape::of);

        // KUBE-SVC- (Cluster policy) and KUBE-SVL- (Local policy) chains of one
        // service port share its hash; a port with both policies has both.
        let (service_ports, endpoint_chains) =
            count_service_chains(nat_chains().map(String::as_str));
        let cluster_ip_rules = kube_services
            .unwrap_or_default()
            .iter()
            .filter(|r| r.contains(" cluster IP\""))
            .count();
        let no_endpoint_rules = ["KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES"]
            .iter()
            .flat_map(|c| self.chain("filter", c).unwrap_or_default())
            .filter(|r| r.contains("has no endpoints"))
            .count();
        KubeIptables {
            tables: self.tables.keys().cloned().collect(),
            kubelet_hint: self.has_chain("mangle", "KUBE-IPTABLES-HINT"),
            kubelet_canary: self.chains_in_any_table("KUBE-KUBELET-CANARY"),
            proxy_canary: self.chains_in_any_table("KUBE-PROXY-CANARY"),
            kube_services: shape,
            kube_services_rules: kube_services.map_or(0, <[String]>::len),
            service_ports,
            endpoint_chains,
            cluster_ip_rules,
            no_endpoint_rules,
            kube_proxy_chains: self
                .tables
                .values()
                .flat_map(|t| t.keys())
                .filter(|c| is_kube_proxy_chain(c))
                .count(),
        }
    }
}

/// The table named by iptables-nft-save's ``Table `NAME' is incompatible``
/// comment (iptables 1.8.x, xtables-save.c).
fn incompatible_table(comment: &str) -> Option<&str> {
    let rest = comment.trim().strip_prefix("Table `")?;
    let (table, tail) = rest.split_once('\'')?;
    tail.trim_start()
        .starts_with("is incompatible")
        .then_some(table)
}

/// kube-proxy's fixed chains in iptables and IPVS modes
/// (docs/kube-proxy-rules.md#iptables-skeleton-chains,
/// docs/kube-proxy-rules.md#ipvs-iptables-glue).
/// Listed rather than "every KUBE-*": kubelet's chains (KUBE-FIREWALL,
/// KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT) and other projects' (kube-router's
/// KUBE-ROUTER-*, KUBE-POD-FW-*, KUBE-NWPLCY-*) share the prefix.
const KUBE_PROXY_CHAINS: [&str; 13] = [
    "KUBE-SERVICES",
    "KUBE-EXTERNAL-SERVICES",
    "KUBE-NODEPORTS",
    "KUBE-NODE-PORT",
    "KUBE-POSTROUTING",
    "KUBE-MARK-MASQ",
    "KUBE-FORWARD",
    "KUBE-PROXY-FIREWALL",
    "KUBE-PROXY-CANARY",
    "KUBE-LOAD-BALANCER",
    "KUBE-IPVS-FILTER",
    "KUBE-IPVS-OUT-FILTER",
    "KUBE-SOURCE-RANGES-FIREWALL",
];

/// Per-service chains: service port (Cluster / Local policy), endpoint,
/// external, load-balancer firewall.
const KUBE_PROXY_PREFIXES: [&str; 5] = [
    "KUBE-SVC-",
    "KUBE-SVL-",
    "KUBE-SEP-",
    "KUBE-EXT-",
    "KUBE-FW-",
];

fn is_kube_proxy_chain(chain: &str) -> bool {
    KUBE_PROXY_CHAINS.contains(&chain) || KUBE_PROXY_PREFIXES.iter().any(|p| chain.starts_with(p))
}

/// What nat `KUBE-SERVICES` says about the mode that wrote it. Both the
/// iptables and the IPVS proxier rewrite this chain on every sync, so its
/// content names the mode that synced last.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServicesShape {
    /// No nat `KUBE-SERVICES` chain.
    #[default]
    Absent,
    /// Per-service-port jumps to `KUBE-SVC-`/`KUBE-SVL-`/`KUBE-EXT-`/`KUBE-FW-`
    /// chains or the trailing NodePort rule: iptables mode
    /// (docs/kube-proxy-rules.md#iptables-skeleton-chains).
    IptablesMode,
    /// `-m set --match-set KUBE-CLUSTER-IP`: IPVS mode's ipset rules
    /// (docs/kube-proxy-rules.md#ipvs-iptables-glue).
    IpvsMode,
    /// The chain exists but holds neither.
    Unrecognised,
}

impl ServicesShape {
    fn of(rules: &[String]) -> ServicesShape {
        if rules
            .iter()
            .any(|r| r.contains("--match-set KUBE-CLUSTER-IP "))
        {
            ServicesShape::IpvsMode
        } else if rules.iter().any(|r| {
            [
                "-j KUBE-SVC-",
                "-j KUBE-SVL-",
                "-j KUBE-EXT-",
                "-j KUBE-FW-",
            ]
            .iter()
            .any(|j| r.contains(j))
                || r.contains("kubernetes service nodeports")
        }) {
            ServicesShape::IptablesMode
        } else {
            ServicesShape::Unrecognised
        }
    }
}

/// kube-proxy's and kubelet's footprint in one iptables dump.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KubeIptables {
    /// Tables in the dump.
    pub tables: Vec<String>,
    /// kubelet's `KUBE-IPTABLES-HINT` in mangle: the backend kubelet uses.
    pub kubelet_hint: bool,
    /// `KUBE-KUBELET-CANARY` in any table.
    pub kubelet_canary: bool,
    /// `KUBE-PROXY-CANARY` (iptables mode's monitor chain) in any table.
    pub proxy_canary: bool,
    pub kube_services: ServicesShape,
    /// Rules in nat `KUBE-SERVICES`: what a packet to no service scans in
    /// iptables mode.
    pub kube_services_rules: usize,
    /// Distinct service ports with a `KUBE-SVC-`/`KUBE-SVL-` chain.
    pub service_ports: usize,
    /// `KUBE-SEP-` chains: one per endpoint of every service port.
    pub endpoint_chains: usize,
    /// nat `KUBE-SERVICES` rules commented `... cluster IP` (one per service
    /// port with endpoints).
    pub cluster_ip_rules: usize,
    /// filter REJECT/DROP rules for service ports that have no endpoints.
    pub no_endpoint_rules: usize,
    /// kube-proxy's chains (fixed and per service), in all tables.
    pub kube_proxy_chains: usize,
}

impl KubeIptables {
    /// kubelet's hint or canary, which iptables-wrapper looks for
    /// (docs/kube-proxy-rules.md#reading-a-node).
    pub fn has_kubelet_marker(&self) -> bool {
        self.kubelet_hint || self.kubelet_canary
    }

    /// Any state kube-proxy (not kubelet) wrote.
    pub fn has_kube_proxy_state(&self) -> bool {
        self.kube_proxy_chains > 0
    }

    /// iptables-mode chains left where the mode no longer writes
    /// `KUBE-SERVICES` as iptables mode would.
    pub fn has_iptables_mode_chains(&self) -> bool {
        self.service_ports > 0 || self.endpoint_chains > 0
    }
}

/// Service ports and endpoints among nat chain names: `KUBE-SVC-` (Cluster
/// policy) and `KUBE-SVL-` (Local policy) chains of one service port share
/// its hash, so a port with both policies counts once; one `KUBE-SEP-`
/// chain per endpoint. Shared by the `iptables-save` reader and the
/// netlink count.
pub fn count_service_chains<'a>(nat_chains: impl Iterator<Item = &'a str>) -> (usize, usize) {
    let mut service_hashes = BTreeSet::new();
    let mut endpoints = 0;
    for c in nat_chains {
        if let Some(hash) = c
            .strip_prefix("KUBE-SVC-")
            .or_else(|| c.strip_prefix("KUBE-SVL-"))
        {
            service_hashes.insert(hash);
        } else if c.starts_with("KUBE-SEP-") {
            endpoints += 1;
        }
    }
    (service_hashes.len(), endpoints)
}

#[cfg(test)]
mod tests {
    #[test]
    fn incompatible_tables_are_recorded_not_parsed_as_empty() {
        let text = "# Generated by iptables-nft-save v1.8.9 (nf_tables)\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n\
                    # Table `nat' is incompatible, use 'nft' tool.\n";
        let dump = super::IptablesDump::parse(text);
        assert_eq!(dump.unreadable_tables, ["nat"]);
        assert!(!dump.complete());
        assert!(super::IptablesDump::parse("*nat\nCOMMIT\n").complete());
    }

    use super::*;

    const SAMPLE: &str = "\
# Generated by iptables-nft-save v1.8.9 (nf_tables) on Thu Nov 26 08:19:38 2026
*mangle
:PREROUTING ACCEPT [0:0]
:KUBE-IPTABLES-HINT - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-AAAA - [0:0]
:KUBE-SVL-AAAA - [0:0]
:KUBE-SVC-BBBB - [0:0]
:KUBE-SEP-1 - [0:0]
-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A KUBE-SERVICES -d 172.30.0.41/32 -p tcp -m comment --comment \"ns1/svc1:p80 cluster IP\" -m tcp --dport 80 -j KUBE-SVC-AAAA
-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
COMMIT
*filter
:KUBE-SERVICES - [0:0]
-A KUBE-SERVICES -d 172.30.0.43/32 -p tcp -m comment --comment \"ns3/svc3:p80 has no endpoints\" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable
COMMIT
# Warning: iptables-legacy tables present, use iptables-legacy-save to see them
";

    #[test]
    fn parses_tables_chains_and_rules() {
        let d = IptablesDump::parse(SAMPLE);
        assert_eq!(
            d.tables.keys().collect::<Vec<_>>(),
            ["filter", "mangle", "nat"]
        );
        assert_eq!(d.chain("nat", "KUBE-SERVICES").unwrap().len(), 2);
        assert_eq!(d.chain("nat", "PREROUTING").unwrap().len(), 1);
        assert!(d.chain("nat", "KUBE-SVC-BBBB").unwrap().is_empty());
        assert!(d.legacy_tables_warning);
    }

    #[test]
    fn kube_footprint_counts_service_ports_once_across_svc_and_svl() {
        let k = IptablesDump::parse(SAMPLE).kube();
        assert_eq!(k.kube_services, ServicesShape::IptablesMode);
        assert_eq!(k.service_ports, 2);
        assert_eq!(k.endpoint_chains, 1);
        assert_eq!(k.cluster_ip_rules, 1);
        assert_eq!(k.no_endpoint_rules, 1);
        assert_eq!(k.kube_services_rules, 2);
        assert!(k.kubelet_hint && k.kubelet_canary && !k.proxy_canary);
    }

    #[test]
    fn ipvs_shaped_services_and_empty_dumps() {
        let ipvs = "*nat\n:KUBE-SERVICES - [0:0]\n\
            -A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT\nCOMMIT\n";
        assert_eq!(
            IptablesDump::parse(ipvs).kube().kube_services,
            ServicesShape::IpvsMode
        );
        let empty = IptablesDump::parse("").kube();
        assert_eq!(empty.kube_services, ServicesShape::Absent);
        assert!(!empty.has_kube_proxy_state() && !empty.has_kubelet_marker());
        let kubelet_only = "*filter\n:KUBE-FIREWALL - [0:0]\n:KUBE-KUBELET-CANARY - [0:0]\n\
            :KUBE-ROUTER-INPUT - [0:0]\n:KUBE-POD-FW-ABC - [0:0]\nCOMMIT\n";
        let k = IptablesDump::parse(kubelet_only).kube();
        assert!(!k.has_kube_proxy_state() && k.has_kubelet_marker());
    }
}
