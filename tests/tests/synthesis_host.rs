//! The synthetic cluster on whatever kernel runs the tests (no probes
//! needed): for every mode this kernel can run, kube-proxy-shaped rules in
//! the node namespace really carry new connections to endpoints and
//! established flows back, and the root namespace is left byte-identical.

use std::time::Duration;

use pathcost_tests::{is_root, root_network_state, skip};
use tracer::synthesis::{
    cluster::{Cluster, ClusterSpec, Protocol, SplitMix64},
    ipvs::Scheduler,
    program::{program, Mode},
    topology::Topology,
    traffic::{self, Backend, Pace},
};

const CONNECTIONS: u32 = 300;
const FLOWS: u32 = 5;
const PACKETS_PER_FLOW: u32 = 4;

#[test]
fn every_mode_carries_traffic_to_endpoints_and_leaves_the_root_namespace_alone() {
    if !is_root() {
        return skip("every_mode_carries_traffic_to_endpoints_and_leaves_the_root_namespace_alone", "needs root");
    }
    let before = root_network_state();
    let pace = Pace { rate: 0, max_time: Duration::from_secs(120) };
    let mut ran = Vec::new();
    for mode in Mode::ALL {
        if let Some(why) = mode.unavailable_reason(Scheduler::default()) {
            skip(&format!("every_mode_carries_traffic_to_endpoints_and_leaves_the_root_namespace_alone ({mode})"), &why);
            continue;
        }
        let cluster = Cluster::new(ClusterSpec::new(50, 2).with_protocols(vec![Protocol::Udp, Protocol::Tcp])).unwrap();
        let topo = Topology::build().unwrap();
        program(mode, &cluster, Scheduler::default(), &topo.node).unwrap_or_else(|e| panic!("{mode}: {e:#}"));
        let backend = Backend::start(&topo, 80).unwrap();

        let mut rng = SplitMix64::new(3);
        let targets = traffic::random_targets(cluster.service_ports(), CONNECTIONS, &mut rng);
        let udp = targets.iter().filter(|(p, _)| *p == Protocol::Udp).count() as u64;
        let new = traffic::new_connections(&topo, targets.clone(), pace).unwrap();
        assert_eq!(new.packets, u64::from(CONNECTIONS));
        assert_eq!(backend.udp_received(), udp, "{mode}: UDP connections reaching endpoints");
        assert_eq!(
            Backend::tcp_syns_received(&topo).unwrap(),
            u64::from(CONNECTIONS) - udp,
            "{mode}: TCP SYNs reaching endpoints"
        );

        // Established flows: every flow gets its echo back through the
        // node's reverse NAT, or established_packets fails.
        let flows = targets
            .iter()
            .filter(|(p, _)| *p == Protocol::Udp)
            .take(FLOWS as usize)
            .map(|(_, a)| *a)
            .collect();
        let est = traffic::established_packets(&topo, &backend, flows, PACKETS_PER_FLOW, pace)
            .unwrap_or_else(|e| panic!("{mode}: {e:#}"));
        assert_eq!(est.packets, u64::from(FLOWS * PACKETS_PER_FLOW));
        ran.push(mode);
    }
    assert!(!ran.is_empty(), "no mode could run here");
    assert_eq!(before, root_network_state(), "the root namespace changed");
}
