//! nftables mode: the `nft -f` input that rebuilds kube-proxy's `ip kube-proxy`
//! table for a [`Cluster`], in the newest layout
//! (docs/kube-proxy-rules.md#nftables-objects, listing in
//! docs/kube-proxy-rules.md#nftables-worked-example). Service dispatch is one
//! verdict-map lookup whatever N is; what grows with N is the map and the
//! number of chains.
//!
//! The text uses the `add table` / `add chain` / `add rule` / `add element`
//! commands that kube-proxy itself feeds to `nft -f -` through knftables, one
//! object per line, so loading it costs the kernel what a kube-proxy full sync
//! costs. Objects come in the order of kube-proxy's transaction (fixed objects,
//! then service port by service port), chains are created in the order `nft list ruleset`
//! prints them, so that it reproduces the worked example, and every chain exists
//! before a rule or map element jumps to it.

// Writing to a String cannot fail, so `write!` results are ignored.
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::cluster::Cluster;
use super::names::{nft_endpoint_chain, nft_service_chain, ChainName};

/// kube-proxy's table (family `ip`; dual stack would add an `ip6` twin).
pub const TABLE: &str = "ip kube-proxy";

/// Sets and maps, in the order `nft list ruleset` prints them
/// (docs/kube-proxy-rules.md#nftables-worked-example): (command, name, type, comment).
const SETS: [(&str, &str, &str, &str); 7] = [
    ("set", "cluster-ips", "ipv4_addr", "Active ClusterIPs"),
    (
        "set",
        "nodeport-ips",
        "ipv4_addr",
        "IPs that accept NodePort traffic",
    ),
    (
        "map",
        "firewall-ips",
        "ipv4_addr . inet_proto . inet_service : verdict",
        "destinations that are subject to LoadBalancerSourceRanges",
    ),
    (
        "map",
        "no-endpoint-nodeports",
        "inet_proto . inet_service : verdict",
        "vmap to drop or reject packets to service nodeports with no endpoints",
    ),
    (
        "map",
        "no-endpoint-services",
        "ipv4_addr . inet_proto . inet_service : verdict",
        "vmap to drop or reject packets to services with no endpoints",
    ),
    (
        "map",
        "service-ips",
        "ipv4_addr . inet_proto . inet_service : verdict",
        "ClusterIP, ExternalIP and LoadBalancer IP traffic",
    ),
    (
        "map",
        "service-nodeports",
        "inet_proto . inet_service : verdict",
        "NodePort traffic",
    ),
];

/// The fixed chains in the order `nft list ruleset` prints them
/// (docs/kube-proxy-rules.md#nftables-worked-example), with their base-chain spec if any. Priorities
/// are numeric: filter-*-pre-dnat run at dstnat-10 so they see pre-DNAT addresses;
/// `nft list` prints the symbolic names where they apply.
const FIXED_CHAINS: [(&str, &str); 16] = [
    ("cluster-ips-check", ""),
    (
        "filter-prerouting-pre-dnat",
        "type filter hook prerouting priority -110 ;",
    ),
    (
        "filter-output-pre-dnat",
        "type filter hook output priority -110 ;",
    ),
    ("filter-forward", "type filter hook forward priority 0 ;"),
    ("filter-input", "type filter hook input priority 0 ;"),
    ("filter-output", "type filter hook output priority 0 ;"),
    ("firewall-check", ""),
    ("mark-for-masquerade", ""),
    ("masquerading", ""),
    ("nat-output", "type nat hook output priority -100 ;"),
    (
        "nat-postrouting",
        "type nat hook postrouting priority 100 ;",
    ),
    ("nat-prerouting", "type nat hook prerouting priority -100 ;"),
    ("nodeport-endpoints-check", ""),
    (
        "reject-chain",
        "comment \"helper for @no-endpoint-services / @no-endpoint-nodeports\" ;",
    ),
    ("services", ""),
    ("service-endpoints-check", ""),
];

/// Rules of the fixed chains (all but `cluster-ips-check`, which needs the
/// service CIDR). The filter jumps are gated on `ct state new` so established
/// flows skip them.
const FIXED_RULES: [(&str, &str); 21] = [
    (
        "filter-prerouting-pre-dnat",
        "ct state new jump firewall-check",
    ),
    ("filter-output-pre-dnat", "ct state new jump firewall-check"),
    (
        "filter-forward",
        "ct state new jump service-endpoints-check",
    ),
    ("filter-forward", "ct state new jump cluster-ips-check"),
    ("filter-input", "ct state new jump nodeport-endpoints-check"),
    ("filter-input", "ct state new jump service-endpoints-check"),
    ("filter-output", "ct state new jump service-endpoints-check"),
    ("filter-output", "ct state new jump cluster-ips-check"),
    (
        "firewall-check",
        "ip daddr . meta l4proto . th dport vmap @firewall-ips",
    ),
    ("mark-for-masquerade", "meta mark set meta mark or 0x4000"),
    // SNAT marked packets once and clear the mark, as in iptables mode.
    ("masquerading", "meta mark & 0x4000 == 0 return"),
    ("masquerading", "meta mark set meta mark xor 0x4000"),
    ("masquerading", "masquerade fully-random"),
    ("nat-output", "jump services"),
    ("nat-postrouting", "jump masquerading"),
    ("nat-prerouting", "jump services"),
    (
        "nodeport-endpoints-check",
        "ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports",
    ),
    ("reject-chain", "reject"),
    (
        "services",
        "ip daddr . meta l4proto . th dport vmap @service-ips",
    ),
    (
        "services",
        "ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports",
    ),
    (
        "service-endpoints-check",
        "ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
    ),
];

/// Object counts of [`nft_input`] for a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NftablesCounts {
    /// `service-*` chains: one per service port.
    pub service_chains: usize,
    /// `endpoint-*` chains: one per endpoint of every service port.
    pub endpoint_chains: usize,
    /// Chains that do not depend on the cluster (16).
    pub fixed_chains: usize,
    /// Rules in all chains: 23 fixed + 2 per service port + 2 per endpoint.
    pub rules: usize,
    /// Elements of `service-ips` (one per service port).
    pub service_ips: usize,
    /// Elements of `cluster-ips` (one per ClusterIP).
    pub cluster_ips: usize,
}

impl NftablesCounts {
    pub fn for_cluster(cluster: &Cluster) -> Self {
        let service_ports = cluster.service_ports().len();
        let endpoints = cluster.total_endpoints();
        NftablesCounts {
            service_chains: service_ports,
            endpoint_chains: endpoints,
            fixed_chains: FIXED_CHAINS.len(),
            rules: FIXED_RULES.len() + 2 + 2 * service_ports + 2 * endpoints,
            service_ips: service_ports,
            cluster_ips: cluster.cluster_ips().len(),
        }
    }
}

/// The `nft -f` input for `cluster`, for a namespace that has no `ip kube-proxy`
/// table yet. `node_ips` fill `nodeport-ips` (kube-proxy's default
/// `nodePortAddresses` in nftables mode is the node's primary IP).
pub fn nft_input(cluster: &Cluster, node_ips: &[Ipv4Addr]) -> String {
    let spec = cluster.spec();
    let counts = NftablesCounts::for_cluster(cluster);
    let mut out = String::with_capacity(
        8192 + 150 * (counts.rules + counts.service_chains + counts.endpoint_chains),
    );
    out.push_str(
        "# kube-proxy nftables mode, synthesised by pathcost (docs/kube-proxy-rules.md#nftables-mode).\n",
    );
    let _ = writeln!(
        out,
        "add table {TABLE} {{ comment \"rules for kube-proxy\" ; }}"
    );
    for (kind, name, key, comment) in SETS {
        let _ = writeln!(
            out,
            "add {kind} {TABLE} {name} {{ type {key} ; comment \"{comment}\" ; }}"
        );
    }
    for (name, base) in FIXED_CHAINS {
        if base.is_empty() {
            let _ = writeln!(out, "add chain {TABLE} {name}");
        } else {
            let _ = writeln!(out, "add chain {TABLE} {name} {{ {base} }}");
        }
    }

    // cluster-ips-check: a known ClusterIP on a port no service has is rejected,
    // an address in the service CIDR that no service has is dropped.
    let _ = writeln!(
        out,
        "add rule {TABLE} cluster-ips-check ip daddr @cluster-ips reject \
         comment \"Reject traffic to invalid ports of ClusterIPs\"\n\
         add rule {TABLE} cluster-ips-check ip daddr {} drop \
         comment \"Drop traffic to unallocated ClusterIPs\"",
        spec.service_cidr
    );
    for (chain, rule) in FIXED_RULES {
        let _ = writeln!(out, "add rule {TABLE} {chain} {rule}");
    }
    for ip in node_ips {
        let _ = writeln!(out, "add element {TABLE} nodeport-ips {{ {ip} }}");
    }

    // Per service port, in the order of kube-proxy's sync loop: the chains
    // (endpoints first, which is also the listing order), the set and map
    // elements, the service chain's rules, then the endpoint chains' rules.
    let mut previous_vip = None;
    for sp in cluster.service_ports() {
        let service = nft_service_chain(&sp.name, sp.protocol);
        let endpoints: Vec<ChainName> = sp
            .endpoints
            .iter()
            .map(|ep| nft_endpoint_chain(&sp.name, sp.protocol, ep))
            .collect();
        for endpoint in &endpoints {
            let _ = writeln!(out, "add chain {TABLE} {endpoint}");
        }
        let _ = writeln!(out, "add chain {TABLE} {service}");
        // Ports of one service share its ClusterIP and are adjacent.
        if previous_vip != Some(sp.cluster_ip) {
            let _ = writeln!(
                out,
                "add element {TABLE} cluster-ips {{ {} }}",
                sp.cluster_ip
            );
            previous_vip = Some(sp.cluster_ip);
        }
        let _ = writeln!(
            out,
            "add element {TABLE} service-ips {{ {} . {} . {} : goto {service} }}",
            sp.cluster_ip, sp.protocol, sp.port
        );

        let _ = writeln!(
            out,
            "add rule {TABLE} {service} ip daddr {} ip saddr != {} jump mark-for-masquerade",
            sp.cluster_ip, spec.cluster_cidr
        );
        // One rule whatever E is: pick an endpoint index uniformly, then goto it
        // through a small anonymous verdict map.
        let _ = write!(
            out,
            "add rule {TABLE} {service} numgen random mod {} vmap {{ ",
            endpoints.len()
        );
        for (i, endpoint) in endpoints.iter().enumerate() {
            let separator = if i + 1 < endpoints.len() { ", " } else { " " };
            let _ = write!(out, "{i} : goto {endpoint}{separator}");
        }
        out.push_str("}\n");

        for (ep, endpoint) in sp.endpoints.iter().zip(&endpoints) {
            // Hairpin: a pod reaching itself through its service must be SNATed.
            let _ = writeln!(
                out,
                "add rule {TABLE} {endpoint} ip saddr {} jump mark-for-masquerade\n\
                 add rule {TABLE} {endpoint} meta l4proto {} dnat to {ep}",
                ep.ip, sp.protocol
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::cluster::{ClusterSpec, Protocol};
    use super::super::testing;
    use super::*;

    const SECTION_3_2: &str = include_str!("fixtures/nftables_2x2.ruleset");
    const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 2);

    fn spec_example() -> Cluster {
        Cluster::new(ClusterSpec::new(2, 2).with_protocols(vec![Protocol::Tcp])).unwrap()
    }

    fn count(text: &str, prefix: &str) -> usize {
        text.lines().filter(|l| l.starts_with(prefix)).count()
    }

    #[test]
    fn two_by_two_has_the_section_3_2_objects() {
        let text = nft_input(&spec_example(), &[NODE_IP]);
        for line in [
            "add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }",
            "add element ip kube-proxy service-ips { 172.30.0.42 . tcp . 80 : goto service-42NFTM6N-ns2/svc2/tcp/p80 }",
            "add element ip kube-proxy cluster-ips { 172.30.0.41 }",
            "add element ip kube-proxy nodeport-ips { 192.168.0.2 }",
            "add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade",
            "add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 numgen random mod 2 vmap { \
             0 : goto endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80, \
             1 : goto endpoint-MLKSHPWN-ns1/svc1/tcp/p80__10.180.2.1/80 }",
            "add rule ip kube-proxy endpoint-4YUYPWCE-ns2/svc2/tcp/p80__10.180.2.2/80 ip saddr 10.180.2.2 jump mark-for-masquerade",
            "add rule ip kube-proxy endpoint-4YUYPWCE-ns2/svc2/tcp/p80__10.180.2.2/80 meta l4proto tcp dnat to 10.180.2.2:80",
            "add rule ip kube-proxy cluster-ips-check ip daddr 172.30.0.0/16 drop comment \"Drop traffic to unallocated ClusterIPs\"",
        ] {
            assert!(text.lines().any(|l| l == line), "missing: {line}\n{text}");
        }
    }

    #[test]
    fn counts_match_the_text() {
        for (n, e, protocols) in [
            (2, 2, vec![Protocol::Tcp]),
            (5, 3, vec![Protocol::Tcp, Protocol::Udp]),
        ] {
            let cluster = Cluster::new(ClusterSpec::new(n, e).with_protocols(protocols)).unwrap();
            let text = nft_input(&cluster, &[NODE_IP]);
            let counts = NftablesCounts::for_cluster(&cluster);
            assert_eq!(
                count(&text, "add chain ip kube-proxy service-") - 1,
                counts.service_chains
            );
            assert_eq!(
                count(&text, "add chain ip kube-proxy endpoint-"),
                counts.endpoint_chains
            );
            assert_eq!(
                count(&text, "add chain "),
                counts.fixed_chains + counts.service_chains + counts.endpoint_chains
            );
            assert_eq!(count(&text, "add rule "), counts.rules);
            assert_eq!(
                count(&text, "add element ip kube-proxy service-ips "),
                counts.service_ips
            );
            assert_eq!(
                count(&text, "add element ip kube-proxy cluster-ips "),
                counts.cluster_ips
            );
        }
    }

    #[test]
    fn udp_ports_get_their_own_chains_and_keys() {
        let cluster = Cluster::new(ClusterSpec::new(1, 1)).unwrap();
        let text = nft_input(&cluster, &[]);
        assert!(text.contains("{ 172.30.0.41 . udp . 80 : goto service-"));
        assert!(
            text.contains("/svc1/udp/u80__10.180.0.1/80 meta l4proto udp dnat to 10.180.0.1:80\n")
        );
        assert_eq!(count(&text, "add element ip kube-proxy nodeport-ips "), 0);
        assert_eq!(count(&text, "add element ip kube-proxy cluster-ips "), 1);
    }

    fn load_and_list(text: &str, list: &str) -> Option<testing::NetnsRun> {
        testing::run_in_fresh_netns(
            &["nft"],
            &format!("nft -f rules && {list}"),
            &[("rules", text)],
        )
    }

    /// Loads the 2×2 text into a throwaway namespace and checks that `nft list
    /// ruleset` prints exactly the worked example
    /// (docs/kube-proxy-rules.md#nftables-worked-example; root only).
    #[test]
    fn loads_as_section_3_2() {
        let text = nft_input(&spec_example(), &[NODE_IP]);
        let Some(run) = load_and_list(&text, "nft list ruleset") else {
            return;
        };
        assert_eq!(run.stdout, SECTION_3_2);
    }

    /// A dual-protocol cluster with several node IPs loads, with every object in
    /// place (root only).
    #[test]
    fn loads_dual_protocol_cluster() {
        let cluster = Cluster::new(ClusterSpec::new(50, 3)).unwrap();
        let node_ips = [NODE_IP, Ipv4Addr::new(192, 168, 0, 3)];
        let text = nft_input(&cluster, &node_ips);
        let Some(run) = load_and_list(&text, "nft list table ip kube-proxy") else {
            return;
        };
        let counts = NftablesCounts::for_cluster(&cluster);
        assert!(run
            .stdout
            .contains("elements = { 192.168.0.2, 192.168.0.3 }"));
        assert_eq!(
            run.stdout.matches(": goto service-").count(),
            counts.service_ips
        );
        assert_eq!(
            run.stdout.matches("\n\tchain ").count(),
            counts.fixed_chains + counts.service_chains + counts.endpoint_chains
        );
    }

    /// N=10000, E=2 (TCP only), printing the load time. Slow, so run on demand:
    /// `cargo test -p tracer synthesis -- --ignored --nocapture`.
    #[test]
    #[ignore = "loads 10,000 services; run with --ignored"]
    fn loads_10000_services() {
        let cluster =
            Cluster::new(ClusterSpec::new(10_000, 2).with_protocols(vec![Protocol::Tcp])).unwrap();
        let text = nft_input(&cluster, &[NODE_IP]);
        let Some(run) = testing::run_in_fresh_netns(
            &["nft"],
            "start=$(date +%s%N); nft -f rules || exit 1; end=$(date +%s%N); \
             echo \"load_ms $(( (end - start) / 1000000 ))\" >&2; \
             nft list table ip kube-proxy | grep -c '^\tchain '",
            &[("rules", &text)],
        ) else {
            return;
        };
        let counts = NftablesCounts::for_cluster(&cluster);
        assert_eq!(
            run.stdout.trim().parse::<usize>().unwrap(),
            counts.fixed_chains + counts.service_chains + counts.endpoint_chains
        );
        eprintln!("nft: {} bytes, {}", text.len(), run.stderr.trim());
    }
}
