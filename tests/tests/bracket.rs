//! The tracepoint bracket backend (needs root and the two tracepoints; no
//! kprobes or fentry): with kube-proxy-shaped iptables rules in the node
//! namespace, every new connection from the client gives exactly one
//! closed bracket, and the bracket at 10,000 services clearly exceeds the
//! one at 1 (the nat table is a linear scan).

use std::time::Duration;

use pathcost_tests::{is_root, skip};
use tracer::{
    probes::{attach::AttachRequest, Backend},
    synthesis::{
        cluster::{Cluster, ClusterSpec, Protocol, SplitMix64},
        ipvs::Scheduler,
        program::{program, Mode},
        topology::Topology,
        traffic::{self, Pace},
    },
    trace::{Session, SessionOptions, TraceReport},
};

const CONNECTIONS: u32 = 300;

fn skip_reason() -> Option<String> {
    if !is_root() {
        return Some("needs root".into());
    }
    tracer::capabilities::bracket_unavailable_reason()
        .or_else(|| Mode::IptablesLegacy.unavailable_reason(Scheduler::default()))
}

async fn bracket_run(services: u32) -> TraceReport {
    let cluster = Cluster::new(ClusterSpec::new(services, 2).with_protocols(vec![Protocol::Udp])).unwrap();
    let topo = Topology::build().unwrap();
    program(Mode::IptablesLegacy, &cluster, Scheduler::default(), &topo.node).unwrap();
    let mut session = Session::start(&SessionOptions {
        request: AttachRequest {
            sites: Vec::new(),
            explicit: false,
            backend: Backend::Bracket,
            emit_events: true,
            bracket: Some(topo.bracket_filter().unwrap()),
            transit: false,
        },
        calibrate: false,
        netns: Some(topo.node.inode().unwrap()),
        keep_calls: false,
    })
    .expect("attach the bracket");
    let targets = traffic::random_targets(cluster.service_ports(), CONNECTIONS, &mut SplitMix64::new(5));
    let sent = traffic::new_connections(&topo, targets, Pace { rate: 0, max_time: Duration::from_secs(120) }).unwrap();
    assert_eq!(sent.packets, u64::from(CONNECTIONS));
    session.collect_until(tokio::time::sleep(Duration::from_millis(300)), None, |_| {}).await.unwrap();
    session.finish().unwrap().0
}

fn bracket_p50(r: &TraceReport) -> u64 {
    let row = r.rows.iter().find(|row| row.site == "prerouting_bracket").expect("bracket row");
    row.inclusive.p50_ns
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bracket_counts_every_new_connection_and_sees_iptables_grow() {
    if let Some(why) = skip_reason() {
        return skip("bracket_counts_every_new_connection_and_sees_iptables_grow", &why);
    }
    let small = bracket_run(1).await;
    let large = bracket_run(10_000).await;
    for r in [&small, &large] {
        eprintln!("{}", tracer::report::table::trace(r));
        assert_eq!(r.sites.len(), 1, "{:?}", r.sites);
        assert_eq!(r.sites[0].mechanism, Some(tracer::probes::Mechanism::Bracket));
        let l = &r.losses;
        assert_eq!(l.brackets_closed, u64::from(CONNECTIONS), "{l:?}");
        assert_eq!(l.brackets_opened, u64::from(CONNECTIONS), "{l:?}");
        assert_eq!(l.brackets_unclosed, 0, "{l:?}");
        assert_eq!(l.ring_reserve_failures, 0, "{l:?}");
        let row = r.rows.iter().find(|row| row.site == "prerouting_bracket").unwrap();
        assert_eq!(row.inclusive.count, u64::from(CONNECTIONS));
        assert_eq!(row.hook, "PRE_ROUTING");
        assert_eq!(r.per_packet.count, u64::from(CONNECTIONS));
    }
    let (a, b) = (bracket_p50(&small), bracket_p50(&large));
    eprintln!("bracket p50: {a} ns at 1 service, {b} ns at 10,000");
    assert!(b > 3 * a, "10,000 services: {b} ns, 1 service: {a} ns");
}
