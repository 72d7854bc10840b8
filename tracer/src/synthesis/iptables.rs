//! iptables mode: one `iptables-restore` input holding what kubelet and kube-proxy
//! would have installed for a [`Cluster`] (docs/kube-proxy-rules.md#iptables-mode). The same text
//! loads with `iptables-legacy-restore` (x_tables, `ipt_do_table`) and
//! `iptables-nft-restore` (nf_tables, `nft_do_chain`), which is how the two
//! backends are compared on identical rules.
//!
//! Rules are written in the form `iptables-save` prints them (match order,
//! `/32`, `--set-xmark`, quoted comments) rather than the form kube-proxy types
//! (`--or-mark 0x4000`, unquoted comments). Both parse to the same kernel rule;
//! writing the canonical form means the text, grouped per chain, *is* the expected
//! `iptables-save` listing, which the tests check byte for byte against the worked example
//! (docs/kube-proxy-rules.md#iptables-worked-example). The one
//! exception is `--probability`: we write kube-proxy's `%0.10f` and iptables-save
//! prints `%.11f` of the value stored in the kernel (a 31-bit fraction).

// Writing to a String cannot fail, so `write!` results are ignored.
use std::fmt::Write as _;

use super::cluster::{Cluster, Ipv4Cidr, ServicePort};
use super::names::{iptables_endpoint_chain, iptables_service_chain, ChainName};
use super::SplitMix64;

/// `1 << masqueradeBit` with kube-proxy's default bit 14
/// (docs/kube-proxy-rules.md#iptables-constants).
pub const MASQUERADE_MARK: &str = "0x4000";

/// Above this many endpoints (over all service ports) kube-proxy enters
/// large-cluster mode and drops the comments on KUBE-SVC→SEP rules and in KUBE-SEP
/// chains (`largeClusterEndpointsThreshold`,
/// docs/kube-proxy-rules.md#iptables-constants).
pub const LARGE_CLUSTER_ENDPOINT_THRESHOLD: usize = 1000;

/// Choices kube-proxy makes from the host or its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IptablesOptions {
    /// `MASQUERADE --random-fully`, which kube-proxy writes whenever iptables
    /// supports it (every iptables this project targets does).
    pub random_fully: bool,
}

impl Default for IptablesOptions {
    fn default() -> Self {
        IptablesOptions { random_fully: true }
    }
}

/// Whether kube-proxy would be in large-cluster mode for this cluster.
pub fn is_large_cluster(cluster: &Cluster) -> bool {
    cluster.total_endpoints() > LARGE_CLUSTER_ENDPOINT_THRESHOLD
}

/// The `--probability` of endpoint rule `index` (0-based) of `count`: 1/(count -
/// index), written with kube-proxy's `%0.10f`. Each rule takes a fair share of what
/// the rules before it left over, so the choice is uniform overall.
pub fn probability(index: usize, count: usize) -> String {
    format!("{:.10}", 1.0 / (count - index) as f64)
}

/// Rule and chain counts of [`restore_input`] for a cluster, as `iptables-save`
/// would count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IptablesRuleCounts {
    /// Rules in kube-proxy's own nat chains: KUBE-POSTROUTING (3), KUBE-MARK-MASQ
    /// (1), KUBE-SERVICES (one per service port + the NodePort rule), each KUBE-SVC
    /// (1 + E) and each KUBE-SEP (2). For N service ports of E endpoints that is
    /// 5 + 2N + 3NE (docs/kube-proxy-rules.md#iptables-worked-example).
    pub nat_rules: usize,
    /// nat PREROUTING, OUTPUT and POSTROUTING jumps into kube-proxy's chains.
    pub nat_jump_rules: usize,
    /// User-defined nat chains, canaries included: 6 + N + NE (the spec's 4 + N +
    /// NE counts only kube-proxy's working chains).
    pub nat_user_chains: usize,
    /// KUBE-FORWARD (3) and KUBE-FIREWALL (1); independent of N.
    pub filter_rules: usize,
    /// Jumps in filter INPUT, FORWARD and OUTPUT.
    pub filter_jump_rules: usize,
}

impl IptablesRuleCounts {
    pub fn for_cluster(cluster: &Cluster) -> Self {
        let service_ports = cluster.service_ports().len();
        let endpoints = cluster.total_endpoints();
        IptablesRuleCounts {
            nat_rules: 3 + 1 + (service_ports + 1) + (service_ports + endpoints) + 2 * endpoints,
            nat_jump_rules: 3,
            nat_user_chains: 6 + service_ports + endpoints,
            filter_rules: 4,
            filter_jump_rules: 11,
        }
    }
}

/// The nat rule count of the worked example
/// (docs/kube-proxy-rules.md#iptables-worked-example) in closed form, for N service ports with E endpoints
/// each: 5 + 2N + 3NE.
pub fn nat_rule_count(service_ports: usize, endpoints_per_port: usize) -> usize {
    5 + 2 * service_ports + 3 * service_ports * endpoints_per_port
}

/// The mangle table: only the kubelet and kube-proxy canary/hint chains
/// (docs/kube-proxy-rules.md#iptables-skeleton-chains).
/// kubelet's KUBE-IPTABLES-HINT is what iptables-wrapper looks for to choose the
/// backend (docs/kube-proxy-rules.md#reading-a-node), so it matters that it exists.
pub(super) fn write_mangle_table(out: &mut String, kube_proxy_canary: bool) {
    out.push_str("*mangle\n:KUBE-IPTABLES-HINT - [0:0]\n:KUBE-KUBELET-CANARY - [0:0]\n");
    if kube_proxy_canary {
        out.push_str(":KUBE-PROXY-CANARY - [0:0]\n");
    }
    out.push_str("COMMIT\n");
}

/// kubelet's KUBE-FIREWALL rule (kube-proxy writes the same rule again when
/// localhost NodePorts are on,
/// docs/kube-proxy-rules.md#iptables-constants; it is one rule either way).
pub(super) const KUBE_FIREWALL_RULE: &str = "-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 \
     -m comment --comment \"block incoming localnet connections\" \
     -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP\n";

/// KUBE-MARK-MASQ and KUBE-POSTROUTING: mark for SNAT, then SNAT marked packets
/// once and clear the mark so a re-traversal does not SNAT again
/// (docs/kube-proxy-rules.md#iptables-skeleton-chains).
/// `--set-xmark 0x4000/0x4000` is how iptables-save shows `--or-mark 0x4000`,
/// `--set-xmark 0x4000/0x0` is `--xor-mark 0x4000`.
pub(super) fn write_masquerade_rules(out: &mut String, random_fully: bool) {
    let m = MASQUERADE_MARK;
    let _ = write!(
        out,
        "-A KUBE-MARK-MASQ -j MARK --set-xmark {m}/{m}\n\
         -A KUBE-POSTROUTING -m mark ! --mark {m}/{m} -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --set-xmark {m}/0x0\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" \
         -j MASQUERADE{}\n",
        if random_fully { " --random-fully" } else { "" }
    );
}

/// The whole iptables-mode ruleset for `cluster` as one `iptables-restore` input.
///
/// Load it into an empty network namespace with `iptables-legacy-restore` or
/// `iptables-nft-restore` (with or without `--noflush`: every chain is declared).
/// kube-proxy and kubelet put their jumps into the built-in chains with
/// `iptables -I` ("ensure rule, prepend") one at a time; starting from empty
/// built-in chains, appending them here in their final top-to-bottom order
/// (docs/kube-proxy-rules.md#iptables-skeleton-chains) gives the same chains.
///
/// The service rules are grouped per service port as kube-proxy writes them
/// (KUBE-SERVICES rule, KUBE-SVC chain, KUBE-SEP chains), the service ports in an
/// order shuffled with `spec().seed` to stand in for Go's random map order
/// (docs/kube-proxy-rules.md#iptables-service-order),
/// and the NodePort rule last.
pub fn restore_input(cluster: &Cluster, options: &IptablesOptions) -> String {
    let large_cluster = is_large_cluster(cluster);
    let cluster_cidr = cluster.spec().cluster_cidr;
    let endpoints = cluster.total_endpoints();
    let mut out =
        String::with_capacity(4096 + 180 * (cluster.service_ports().len() * 3 + endpoints * 5));

    out.push_str(
        "# kube-proxy iptables mode, synthesised by pathcost (docs/kube-proxy-rules.md#iptables-mode).\n\
         # Built-in chain jumps are appended in their final order; kube-proxy prepends them\n\
         # one by one, which ends the same when starting from empty chains.\n",
    );
    write_mangle_table(&mut out, true);

    // filter: fixed, independent of N when every service has endpoints
    // (docs/kube-proxy-rules.md#iptables-skeleton-chains).
    out.push_str(
        "*filter\n\
         :KUBE-EXTERNAL-SERVICES - [0:0]\n\
         :KUBE-FIREWALL - [0:0]\n\
         :KUBE-FORWARD - [0:0]\n\
         :KUBE-KUBELET-CANARY - [0:0]\n\
         :KUBE-NODEPORTS - [0:0]\n\
         :KUBE-PROXY-CANARY - [0:0]\n\
         :KUBE-PROXY-FIREWALL - [0:0]\n\
         :KUBE-SERVICES - [0:0]\n\
         -A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n\
         -A INPUT -m comment --comment \"kubernetes health check service ports\" -j KUBE-NODEPORTS\n\
         -A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\n\
         -A INPUT -j KUBE-FIREWALL\n\
         -A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n\
         -A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n\
         -A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\n\
         -A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n\
         -A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -j KUBE-FIREWALL\n",
    );
    out.push_str(KUBE_FIREWALL_RULE);
    // The INVALID drop is what kube-proxy writes when nf_conntrack_tcp_be_liberal
    // is 0 (the default) and nfacct is unavailable, as in the worked example
    // (docs/kube-proxy-rules.md#iptables-worked-example).
    let _ = write!(
        out,
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n\
         -A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {m}/{m} -j ACCEPT\n\
         -A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         COMMIT\n",
        m = MASQUERADE_MARK
    );

    // nat: the per-service part.
    let mut order: Vec<usize> = (0..cluster.service_ports().len()).collect();
    SplitMix64::new(cluster.spec().seed).shuffle(&mut order);
    let chains: Vec<(ChainName, Vec<ChainName>)> = order
        .iter()
        .map(|&i| {
            let sp = &cluster.service_ports()[i];
            let sep = sp
                .endpoints
                .iter()
                .map(|ep| iptables_endpoint_chain(&sp.name, sp.protocol, ep))
                .collect();
            (iptables_service_chain(&sp.name, sp.protocol), sep)
        })
        .collect();

    out.push_str(
        "*nat\n\
         :KUBE-KUBELET-CANARY - [0:0]\n\
         :KUBE-MARK-MASQ - [0:0]\n\
         :KUBE-NODEPORTS - [0:0]\n\
         :KUBE-POSTROUTING - [0:0]\n\
         :KUBE-PROXY-CANARY - [0:0]\n\
         :KUBE-SERVICES - [0:0]\n",
    );
    for (svc, seps) in &chains {
        let _ = writeln!(out, ":{svc} - [0:0]");
        for sep in seps {
            let _ = writeln!(out, ":{sep} - [0:0]");
        }
    }
    out.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n",
    );
    write_masquerade_rules(&mut out, options.random_fully);
    for (&i, (svc, seps)) in order.iter().zip(&chains) {
        write_service_port(
            &mut out,
            &cluster.service_ports()[i],
            svc,
            seps,
            cluster_cidr,
            large_cluster,
        );
    }
    out.push_str(
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" \
         -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n\
         COMMIT\n",
    );
    out
}

/// One service port's rules, in kube-proxy's order
/// (docs/kube-proxy-rules.md#iptables-service-chains).
fn write_service_port(
    out: &mut String,
    sp: &ServicePort,
    svc_chain: &ChainName,
    sep_chains: &[ChainName],
    cluster_cidr: Ipv4Cidr,
    large_cluster: bool,
) {
    let proto = sp.protocol;
    let name = &sp.name;
    let dst = format!(
        "-d {}/32 -p {proto} -m comment --comment \"{name} cluster IP\" -m {proto} --dport {}",
        sp.cluster_ip, sp.port
    );
    let _ = writeln!(out, "-A KUBE-SERVICES {dst} -j {svc_chain}");
    // Masquerade traffic to the VIP that does not come from a pod (the
    // local-traffic detector is --cluster-cidr). This comment survives
    // large-cluster mode.
    let _ = writeln!(
        out,
        "-A {svc_chain} ! -s {cluster_cidr} {dst} -j KUBE-MARK-MASQ"
    );

    let count = sp.endpoints.len();
    for (i, (ep, sep)) in sp.endpoints.iter().zip(sep_chains).enumerate() {
        let _ = write!(out, "-A {svc_chain}");
        if !large_cluster {
            let _ = write!(out, " -m comment --comment \"{name} -> {ep}\"");
        }
        if i + 1 < count {
            let _ = write!(
                out,
                " -m statistic --mode random --probability {}",
                probability(i, count)
            );
        }
        let _ = writeln!(out, " -j {sep}");
    }
    let comment = if large_cluster {
        String::new()
    } else {
        format!(" -m comment --comment \"{name}\"")
    };
    for (ep, sep) in sp.endpoints.iter().zip(sep_chains) {
        // Hairpin: a pod reaching itself through the VIP must be SNATed, or the
        // reply would bypass conntrack's reverse NAT.
        let _ = writeln!(out, "-A {sep} -s {}/32{comment} -j KUBE-MARK-MASQ", ep.ip);
        let _ = writeln!(
            out,
            "-A {sep} -p {proto}{comment} -m {proto} -j DNAT --to-destination {ep}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::cluster::{ClusterSpec, Protocol};
    use super::super::testing::{self, save_order, NetnsRun};
    use super::*;

    const SECTION_1_7: &str = include_str!("fixtures/iptables_2x2.save");

    fn spec_example(seed: u64) -> Cluster {
        Cluster::new(
            ClusterSpec::new(2, 2)
                .with_protocols(vec![Protocol::Tcp])
                .with_seed(seed),
        )
        .unwrap()
    }

    fn rules_of<'a>(text: &'a str, table: &str, chain: &str) -> Vec<&'a str> {
        let prefix = format!("-A {chain} ");
        testing::table_lines(text, table)
            .into_iter()
            .filter(|l| l.starts_with(&prefix))
            .collect()
    }

    #[test]
    fn two_by_two_is_section_1_7_in_save_order() {
        for seed in 0..8 {
            let text = restore_input(&spec_example(seed), &IptablesOptions::default());
            // Service order in KUBE-SERVICES is random by design
            // (docs/kube-proxy-rules.md#iptables-service-order); upstream
            // tests sort it away and so do we, keeping the NodePort rule last.
            assert_eq!(save_order(&text, true), SECTION_1_7, "seed {seed}");
        }
    }

    #[test]
    fn kube_services_order_follows_the_seed_and_nodeports_is_last() {
        let orders: std::collections::HashSet<Vec<String>> = (0..16)
            .map(|seed| {
                let text = restore_input(&spec_example(seed), &IptablesOptions::default());
                let rules = rules_of(&text, "nat", "KUBE-SERVICES");
                assert!(rules.last().unwrap().contains("-j KUBE-NODEPORTS"));
                rules.iter().map(|r| r.to_string()).collect()
            })
            .collect();
        assert_eq!(orders.len(), 2, "both orders of two services should occur");
        let a = restore_input(&spec_example(3), &IptablesOptions::default());
        let b = restore_input(&spec_example(3), &IptablesOptions::default());
        assert_eq!(a, b);
    }

    #[test]
    fn nat_rule_count_is_5_plus_2n_plus_3ne() {
        for (n, e) in [(1, 1), (2, 2), (7, 3), (40, 1)] {
            let cluster =
                Cluster::new(ClusterSpec::new(n, e).with_protocols(vec![Protocol::Tcp])).unwrap();
            let text = restore_input(&cluster, &IptablesOptions::default());
            let nat = testing::table_lines(&text, "nat");
            let builtin = ["-A PREROUTING ", "-A OUTPUT ", "-A POSTROUTING "];
            let jumps = nat
                .iter()
                .filter(|l| builtin.iter().any(|b| l.starts_with(b)))
                .count();
            let rules = nat.iter().filter(|l| l.starts_with("-A ")).count() - jumps;
            let chains = nat.iter().filter(|l| l.starts_with(':')).count();
            let counts = IptablesRuleCounts::for_cluster(&cluster);
            assert_eq!(rules, nat_rule_count(n as usize, e as usize));
            assert_eq!(rules, counts.nat_rules);
            assert_eq!(jumps, counts.nat_jump_rules);
            assert_eq!(chains, counts.nat_user_chains);
            let filter = testing::table_lines(&text, "filter");
            let filter_rules = filter.iter().filter(|l| l.starts_with("-A KUBE-")).count();
            assert_eq!(filter_rules, counts.filter_rules);
            assert_eq!(
                filter.iter().filter(|l| l.starts_with("-A ")).count() - filter_rules,
                counts.filter_jump_rules
            );
        }
        assert_eq!(nat_rule_count(2, 2), 21);
    }

    #[test]
    fn probabilities_are_one_over_remaining() {
        assert_eq!(probability(0, 2), "0.5000000000");
        assert_eq!(probability(0, 3), "0.3333333333");
        assert_eq!(probability(1, 3), "0.5000000000");
        assert_eq!(probability(0, 7), "0.1428571429");
        let cluster =
            Cluster::new(ClusterSpec::new(1, 3).with_protocols(vec![Protocol::Tcp])).unwrap();
        let text = restore_input(&cluster, &IptablesOptions::default());
        let svc = iptables_service_chain(&cluster.service_ports()[0].name, Protocol::Tcp);
        let rules = rules_of(&text, "nat", svc.as_str());
        assert_eq!(rules.len(), 4);
        assert!(rules[1].contains("--probability 0.3333333333 "));
        assert!(rules[2].contains("--probability 0.5000000000 "));
        assert!(!rules[3].contains("statistic"));
    }

    #[test]
    fn large_cluster_mode_drops_endpoint_comments_only() {
        // 501 services x 2 endpoints = 1002 endpoints > 1000.
        let cluster =
            Cluster::new(ClusterSpec::new(501, 2).with_protocols(vec![Protocol::Tcp])).unwrap();
        assert!(is_large_cluster(&cluster));
        let text = restore_input(&cluster, &IptablesOptions::default());
        let sp = &cluster.service_ports()[0];
        let svc = iptables_service_chain(&sp.name, sp.protocol);
        let sep = iptables_endpoint_chain(&sp.name, sp.protocol, &sp.endpoints[0]);
        let svc_rules = rules_of(&text, "nat", svc.as_str());
        assert!(svc_rules[0].contains("--comment \"ns1/svc1:p80 cluster IP\""));
        assert!(svc_rules[1..].iter().all(|r| !r.contains("comment")));
        assert!(rules_of(&text, "nat", sep.as_str())
            .iter()
            .all(|r| !r.contains("comment")));
        assert!(rules_of(&text, "nat", "KUBE-SERVICES")
            .iter()
            .all(|r| r.contains("comment")));

        let cluster =
            Cluster::new(ClusterSpec::new(500, 2).with_protocols(vec![Protocol::Tcp])).unwrap();
        assert!(!is_large_cluster(&cluster));
    }

    #[test]
    fn udp_ports_and_random_fully_option() {
        let cluster = Cluster::new(ClusterSpec::new(1, 1)).unwrap();
        let text = restore_input(
            &cluster,
            &IptablesOptions {
                random_fully: false,
            },
        );
        assert!(text.contains(
            "-A KUBE-SERVICES -d 172.30.0.41/32 -p udp -m comment --comment \"ns1/svc1:u80 cluster IP\" -m udp --dport 80 -j KUBE-SVC-"
        ));
        assert!(text.contains("-j MASQUERADE\n"));
        assert!(!text.contains("--random-fully"));
    }

    fn load_and_save(backend: &str, text: &str) -> Option<NetnsRun> {
        let restore = format!("{backend}-restore");
        let save = format!("{backend}-save");
        testing::run_in_fresh_netns(
            &[&restore, &save],
            &format!("{restore} -w 10 rules && {save}"),
            &[("rules", text)],
        )
    }

    /// Loads the 2×2 ruleset with both backends in a throwaway network namespace and
    /// checks that iptables-save prints exactly the worked example
    /// (docs/kube-proxy-rules.md#iptables-worked-example; root only).
    #[test]
    fn loads_as_section_1_7_with_both_backends() {
        let text = restore_input(&spec_example(1), &IptablesOptions::default());
        for backend in ["iptables-legacy", "iptables-nft"] {
            let Some(run) = load_and_save(backend, &text) else {
                return;
            };
            assert_eq!(save_order(&run.stdout, true), SECTION_1_7, "{backend}");
        }
    }

    /// A large-cluster-mode ruleset with UDP ports loads and saves back as generated
    /// (root only).
    #[test]
    fn loads_large_cluster_mode_with_both_backends() {
        let cluster = Cluster::new(ClusterSpec::new(300, 2).with_seed(9)).unwrap();
        assert!(is_large_cluster(&cluster));
        let text = restore_input(&cluster, &IptablesOptions::default());
        for backend in ["iptables-legacy", "iptables-nft"] {
            let Some(run) = load_and_save(backend, &text) else {
                return;
            };
            assert_eq!(
                save_order(&run.stdout, false),
                save_order(&text, false),
                "{backend}"
            );
        }
    }

    /// N=10000, E=2 (TCP only) with both backends, printing load times. Slow, so
    /// run on demand: `cargo test -p tracer synthesis -- --ignored --nocapture`.
    #[test]
    #[ignore = "loads 10,000 services; run with --ignored"]
    fn loads_10000_services_with_both_backends() {
        let cluster =
            Cluster::new(ClusterSpec::new(10_000, 2).with_protocols(vec![Protocol::Tcp])).unwrap();
        let text = restore_input(&cluster, &IptablesOptions::default());
        let counts = IptablesRuleCounts::for_cluster(&cluster);
        for backend in ["iptables-legacy", "iptables-nft"] {
            let restore = format!("{backend}-restore");
            let save = format!("{backend}-save");
            let script = format!(
                "start=$(date +%s%N); {restore} -w 10 rules || exit 1; end=$(date +%s%N); \
                 echo \"load_ms $(( (end - start) / 1000000 ))\" >&2; {save} -t nat"
            );
            let Some(run) =
                testing::run_in_fresh_netns(&[&restore, &save], &script, &[("rules", &text)])
            else {
                return;
            };
            let rules = run
                .stdout
                .lines()
                .filter(|l| l.starts_with("-A KUBE-"))
                .count();
            assert_eq!(rules, counts.nat_rules, "{backend}");
            eprintln!("{backend}: {} bytes, {}", text.len(), run.stderr.trim());
        }
    }
}
