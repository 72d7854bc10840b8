//! Detection's netlink counts against rules whose size is known: the
//! synthesis generators program N services into the node namespace of a
//! private topology, `detect` runs on that namespace's thread, and the
//! counts the kernel answers over netlink must be N, equal to what the
//! node's tools count. iptables-nft and nftables mode share one namespace
//! (the host can run both); IPVS needs `ip_vs`, so it runs in the VM.

use pathcost_tests::{is_root, root_network_state, skip};
use tracer::{
    detection::{self, CollectOptions, CountSource, Detection, SourcedCount},
    synthesis::{
        cluster::{Cluster, ClusterSpec, Protocol},
        ipvs::Scheduler,
        program::{program, Mode},
        topology::Topology,
    },
};

/// Enough services that nf_tables answers the `service-ips` dump in
/// several messages, few enough that iptables-nft-restore takes a second.
const SERVICES: u32 = 600;
const ENDPOINTS: u32 = 2;

fn cluster() -> Cluster {
    Cluster::new(ClusterSpec::new(SERVICES, ENDPOINTS).with_protocols(vec![Protocol::Tcp])).unwrap()
}

/// Programs `modes` into a fresh topology's node namespace and detects there.
fn detect_in_node_namespace(modes: &[Mode], cluster: &Cluster) -> Detection {
    let topo = Topology::build().unwrap();
    for mode in modes {
        program(*mode, cluster, Scheduler::default(), &topo.node).unwrap_or_else(|e| panic!("{mode}: {e:#}"));
    }
    // Tools forked from this thread, /proc/thread-self/net and the netlink
    // sockets all answer for the node namespace.
    let detection = topo.node.run(|| detection::detect_with(&CollectOptions::default())).unwrap();
    detection.unwrap_or_else(|e| panic!("detect: {e:#}"))
}

fn count<'a>(d: &'a Detection, counted_in: &str, what: &str) -> &'a SourcedCount {
    d.count_sources
        .iter()
        .find(|c| c.counted_in == counted_in && c.what == what)
        .unwrap_or_else(|| panic!("no {counted_in} {what} in {:#?}", d.count_sources))
}

/// The kernel answered `expected`, the tool agrees, and netlink's figure is
/// the one reported.
fn assert_netlink_counts(d: &Detection, counted_in: &str, what: &str, expected: usize) {
    let c = count(d, counted_in, what);
    assert_eq!(c.netlink, Some(expected), "{c:?}");
    assert_eq!(c.tool, Some(expected), "{c:?}");
    assert_eq!((c.value, c.answered_by, c.disagree), (Some(expected), Some(CountSource::Netlink), false), "{c:?}");
}

fn assert_no_netlink_failure(d: &Detection) {
    let failed: Vec<_> = d.node.unreadable.iter().filter(|u| u.input.contains("netlink")).collect();
    assert!(failed.is_empty(), "netlink unreadable: {failed:?}");
}

#[test]
fn iptables_nft_and_nftables_counts_over_netlink_are_the_services_programmed() {
    let test = "iptables_nft_and_nftables_counts_over_netlink_are_the_services_programmed";
    if !is_root() {
        return skip(test, "needs root");
    }
    if let Some(why) = Mode::Nftables.unavailable_reason(Scheduler::default()) {
        return skip(test, &why);
    }
    let before = root_network_state();
    let cluster = cluster();
    let ports = cluster.service_ports().len();
    let endpoints = cluster.total_endpoints();
    assert_eq!(ports, SERVICES as usize);

    let d = detect_in_node_namespace(&[Mode::IptablesNft, Mode::Nftables], &cluster);
    assert_no_netlink_failure(&d);
    assert_netlink_counts(&d, "iptables-nft", "service_ports", ports);
    assert_netlink_counts(&d, "iptables-nft", "endpoints", endpoints);
    assert_netlink_counts(&d, "nftables ip", "service_ports", ports);
    assert_netlink_counts(&d, "nftables ip", "endpoints", endpoints);
    assert_netlink_counts(&d, "nftables ip", "service_ips_elements", ports);
    assert_netlink_counts(&d, "nftables ip", "cluster_ips_elements", SERVICES as usize);

    // The JSON carries the same, as scripts read it.
    let json = serde_json::to_value(&d).unwrap();
    let sources = json["count_sources"].as_array().unwrap();
    assert!(
        sources.iter().any(|c| c["counted_in"] == "iptables-nft"
            && c["what"] == "service_ports"
            && c["value"] == ports
            && c["answered_by"] == "netlink"),
        "{sources:#?}"
    );
    assert_eq!(before, root_network_state(), "the root namespace changed");
}

#[test]
fn ipvs_virtual_servers_over_netlink_are_the_services_programmed() {
    let test = "ipvs_virtual_servers_over_netlink_are_the_services_programmed";
    if !is_root() {
        return skip(test, "needs root");
    }
    if let Some(why) = Mode::Ipvs.unavailable_reason(Scheduler::default()) {
        return skip(test, &why);
    }
    let before = root_network_state();
    let cluster = cluster();
    let d = detect_in_node_namespace(&[Mode::Ipvs], &cluster);
    assert_no_netlink_failure(&d);
    assert_netlink_counts(&d, "ipvs", "virtual_servers", cluster.service_ports().len());
    assert_eq!(before, root_network_state(), "the root namespace changed");
}
