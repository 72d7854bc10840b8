//! `pathcost serve` scraped while traffic flows through a kube-proxy-shaped
//! node namespace (iptables-legacy rules for a few services):
//! - the exposition parses, every metric family is there with its labels;
//! - per-call counts grow by exactly the number of new connections sent,
//!   twice, and the kernel's own counters agree;
//! - the node labels come from detection run in that namespace
//!   (kube_proxy_mode="iptables", the service count);
//! - SIGTERM stops serving and leaves no program loaded.
//!
//! `pathcost serve` runs as a child process inside the node namespace
//! (entered with setns before exec), listening on its loopback, so its
//! detection sees the synthetic rules and nothing of the host's. With
//! kprobes (the test VM) it attaches the default sites; without them (the
//! build host) the tracepoint bracket. Needs root; skips with the reason
//! otherwise.

use std::{
    net::{SocketAddr, SocketAddrV4, TcpStream},
    time::{Duration, Instant},
};

use pathcost_tests::{
    loaded_ours, loaded_ours_after_exit,
    serve::{request, scrape, setup, Collect, Exposition, Probes, Server},
    skip,
};
use tracer::synthesis::{
    cluster::{Cluster, ClusterSpec, Protocol},
    ipvs::Scheduler,
    program::{program, Mode},
    topology::Topology,
    traffic::{self, Pace},
};

const SERVICES: u32 = 12;
const CONNECTIONS: u32 = 200;
/// Endpoints listen here (the cluster's default target port).
const ENDPOINT_PORT: u16 = 80;

/// Labels that pick series out of an exposition.
type Selector = Vec<(&'static str, &'static str)>;

/// The series that counts each new connection once, and its kernel twin.
fn counted_series(probes: Probes) -> (Selector, Selector) {
    match probes {
        // The nat table is consulted for the first packet of a connection only.
        Probes::Functions => (
            vec![("site", "ipt_do_table"), ("hook", "PRE_ROUTING"), ("table", "nat"), ("mechanism", "kprobe")],
            vec![("site", "ipt_do_table"), ("hook", "PRE_ROUTING")],
        ),
        Probes::Bracket => (
            vec![("site", "prerouting_bracket"), ("hook", "PRE_ROUTING"), ("mechanism", "bracket")],
            vec![("site", "prerouting_bracket"), ("hook", "PRE_ROUTING")],
        ),
    }
}

/// Scrapes until `series` has grown by `by` since `before` (the ring
/// buffer is read asynchronously), then returns that scrape.
fn scrape_after(
    topo: &Topology,
    address: SocketAddr,
    before: &Exposition,
    series: &[(&str, &str)],
    by: f64,
) -> Exposition {
    let name = "pathcost_call_duration_seconds_count";
    let start = before.sum(name, series);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = scrape(topo, address);
        let grown = now.sum(name, series) - start;
        if Instant::now() > deadline && grown < by {
            // What did arrive, and under which labels: the series that was
            // waited for may have been counted under others.
            eprintln!("after 60 s, {grown} of {by}; every per-call count:");
            for (labels, value) in now.matching(name, &[]) {
                eprintln!("  {labels:?} {value}");
            }
            for family in ["pathcost_probe_events_total", "pathcost_events_lost_total", "pathcost_kernel_call_duration_seconds_count"] {
                for (labels, value) in now.matching(family, &[]) {
                    eprintln!("  {family} {labels:?} {value}");
                }
            }
        }
        if grown >= by || Instant::now() > deadline {
            // A moment more, so a count that overshoots shows up.
            std::thread::sleep(Duration::from_millis(500));
            return scrape(topo, address);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// New connections over every service in turn. Source ports restart at the
/// same number each round, so round `r` shifts the services by `r`: a
/// repeated 5-tuple would be a conntrack hit, not a new connection.
fn send_connections(topo: &Topology, cluster: &Cluster, round: usize) {
    let ports = cluster.service_ports();
    let targets = (0..CONNECTIONS as usize)
        .map(|i| {
            let sp = &ports[(i + round) % ports.len()];
            (sp.protocol, SocketAddrV4::new(sp.cluster_ip, sp.port))
        })
        .collect();
    let sent = traffic::new_connections(topo, targets, Pace { rate: 0, max_time: Duration::from_secs(120) }).unwrap();
    assert_eq!(sent.packets, u64::from(CONNECTIONS));
}

fn check_families(e: &Exposition, probes: Probes, collect: Collect) {
    // Aggregating in the kernel, only the inclusive per-call family is a
    // histogram (see metrics/scrape.rs, encode_aggregates).
    if collect == Collect::Events {
        for name in [
            "pathcost_call_self_duration_seconds",
            "pathcost_call_corrected_duration_seconds",
            "pathcost_call_self_corrected_duration_seconds",
        ] {
            assert_eq!(e.types.get(name).map(String::as_str), Some("histogram"), "TYPE of {name}: {:?}", e.types);
        }
    }
    for (name, kind) in [
        ("pathcost_call_duration_seconds", "histogram"),
        ("pathcost_kernel_call_duration_seconds", "histogram"),
        ("pathcost_kernel_call_self_seconds_total", "counter"),
        ("pathcost_kernel_call_max_seconds", "gauge"),
        ("pathcost_packet_netfilter_duration_seconds", "histogram"),
        ("pathcost_packet_netfilter_corrected_duration_seconds", "histogram"),
        ("pathcost_events_lost_total", "counter"),
        ("pathcost_probe_events_total", "counter"),
        ("pathcost_probe_pair_cost_seconds", "gauge"),
        ("pathcost_probe_span_cost_seconds", "gauge"),
        ("pathcost_probe_info", "gauge"),
        ("pathcost_node_info", "gauge"),
        ("pathcost_kube_services", "gauge"),
        ("pathcost_kube_endpoints", "gauge"),
        ("pathcost_detection_runs_total", "counter"),
        ("pathcost_detection_last_success_timestamp_seconds", "gauge"),
    ] {
        assert_eq!(e.types.get(name).map(String::as_str), Some(kind), "TYPE of {name}: {:?}", e.types);
    }
    for reason in [
        "ring_reserve_failures",
        "unmatched_exits",
        "orphaned_frames",
        "depth_overflows",
        "negative_durations",
        "undecodable_events",
        "brackets_unclosed",
        "transits_unclosed",
        "series_over_cap",
    ] {
        e.one("pathcost_events_lost_total", &[("reason", reason)]);
    }
    for kind in ["entries", "matched", "brackets_opened", "brackets_closed", "transits_opened", "transits_closed"] {
        e.one("pathcost_probe_events_total", &[("kind", kind)]);
    }
    match probes {
        Probes::Bracket => {
            e.one("pathcost_probe_info", &[("site", "prerouting_bracket"), ("mechanism", "bracket")]);
            e.one(
                "pathcost_packet_netfilter_duration_seconds_count",
                &[("site", "prerouting_bracket"), ("mechanism", "bracket")],
            );
        }
        Probes::Functions => {
            e.one("pathcost_probe_info", &[("site", "ipt_do_table"), ("mechanism", "kprobe")]);
            e.one("pathcost_packet_netfilter_duration_seconds_count", &[("site", "nf_hook_slow")]);
            // Calibrated at start-up, so the self-cost gauges have a value.
            assert!(e.matching("pathcost_probe_pair_cost_seconds", &[]).count() > 0, "no self cost");
        }
    }
}

/// Node labels from detection in the node namespace, where the test's
/// iptables-legacy rules are kube-proxy's.
fn check_node(e: &Exposition, service_ports: usize) {
    if std::process::Command::new("iptables-legacy-save").arg("--version").output().is_err() {
        return skip("serve: node labels", "iptables-legacy-save is not installed, so detection cannot read the rules");
    }
    let (labels, v) = e.matching("pathcost_node_info", &[]).next().expect("pathcost_node_info");
    assert_eq!(v, 1.0);
    assert_eq!(labels["kube_proxy_mode"], "iptables", "{labels:?}");
    assert_eq!(labels["iptables_backend"], "iptables-legacy", "{labels:?}");
    assert_eq!(labels["kernel"], tracer::capabilities::kernel_release());
    let active = [("kube_proxy_mode", "iptables"), ("source", "iptables-legacy"), ("active", "true")];
    assert_eq!(e.one("pathcost_kube_services", &active), service_ports as f64);
    assert!(e.one("pathcost_kube_endpoints", &active) >= service_ports as f64);
}

#[test]
fn serve_exposes_growing_counts_and_detaches_on_sigterm() {
    // With events, then serve's default (per-call series from the kernel's
    // aggregates, exact in their counts, no event per call). In this order:
    // each case checks that none of pathcost's programs are loaded before
    // and after it.
    const TEST: &str = "serve_exposes_growing_counts_and_detaches_on_sigterm";
    serve_case(TEST, Collect::Events);
    serve_case(TEST, Collect::Kernel);
}

fn serve_case(test: &str, collect: Collect) {
    let probes = match setup() {
        Ok(p) => p,
        Err(why) => return skip(test, &why),
    };
    assert!(loaded_ours().is_empty(), "leftovers before the test: {:?}", loaded_ours());
    let cluster = Cluster::new(ClusterSpec::new(SERVICES, 2).with_protocols(vec![Protocol::Udp])).unwrap();
    let topo = Topology::build().unwrap();
    program(Mode::IptablesLegacy, &cluster, Scheduler::default(), &topo.node).unwrap();
    // A listening endpoint: no ICMP port-unreachable comes back into the
    // node to be counted as traffic.
    let backend = traffic::Backend::start(&topo, ENDPOINT_PORT).unwrap();

    let mut server = Server::start_collecting(&topo, probes, collect);
    let address = server.address;
    eprintln!("serve: {probes:?} probes, {collect:?} collection, metrics at {address}");

    // Other paths.
    // Attached and polling: healthy (readiness waits for detection, below).
    let (status, _, body) = request(&topo, address, "/healthz", None);
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(body.starts_with("ok\nprobes: ok: "), "{body}");
    let (status, _, _) = request(&topo, address, "/nothing-here", None);
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, content_type, body) =
        request(&topo, address, "/metrics", Some("application/openmetrics-text;version=1.0.0"));
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    assert!(body.ends_with("# EOF\n"));

    // Detection runs beside attaching; wait for its first answer.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut before = scrape(&topo, address);
    while before.matching("pathcost_node_info", &[]).next().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        before = scrape(&topo, address);
    }
    check_node(&before, cluster.service_ports().len());
    let (status, _, body) = request(&topo, address, "/readyz", None);
    assert_eq!(status, "HTTP/1.1 200 OK", "detection succeeded, so ready: {body}");

    let (calls, kernel) = counted_series(probes);
    let mut previous = before;
    for round in 0..2 {
        send_connections(&topo, &cluster, round);
        let after = scrape_after(&topo, address, &previous, &calls, f64::from(CONNECTIONS));
        let grown = |name: &str, want: &[(&str, &str)]| after.sum(name, want) - previous.sum(name, want);
        let n = f64::from(CONNECTIONS);
        // Per-call families appear with their first call.
        check_families(&after, probes, collect);
        assert_eq!(grown("pathcost_call_duration_seconds_count", &calls), n, "round {round}");
        if collect == Collect::Events {
            assert_eq!(grown("pathcost_call_self_duration_seconds_count", &calls), n, "round {round}");
        }
        assert!(grown("pathcost_call_duration_seconds_sum", &calls) > 0.0);
        let mut inf = calls.clone();
        inf.push(("le", "+Inf"));
        assert_eq!(
            after.sum("pathcost_call_duration_seconds_bucket", &inf),
            after.sum("pathcost_call_duration_seconds_count", &calls)
        );
        // The kernel's own count sees every namespace's calls for function
        // sites, so at least these; the bracket is filtered in the kernel.
        let in_kernel = grown("pathcost_kernel_call_duration_seconds_count", &kernel);
        match probes {
            Probes::Bracket => {
                assert_eq!(in_kernel, n, "round {round}");
                assert_eq!(grown("pathcost_probe_events_total", &[("kind", "brackets_closed")]), n);
            }
            Probes::Functions => assert!(in_kernel >= n, "round {round}: {in_kernel}"),
        }
        // Per-packet totals are built from events only. A packet counts
        // when its skb address comes back at a hook it passed, or after a
        // quiet gap of 5 s: wait that long at most for this round's.
        if collect == Collect::Events {
            let packets = "pathcost_packet_netfilter_duration_seconds_count";
            let deadline = Instant::now() + Duration::from_secs(7);
            let mut finished = grown(packets, &[]);
            while finished == 0.0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(250));
                finished = scrape(&topo, address).sum(packets, &[]) - previous.sum(packets, &[]);
            }
            assert!(finished > 0.0, "round {round}: no packet finished");
        }
        if probes == Probes::Functions {
            let runs = |e: &Exposition| e.sum("pathcost_probe_program_runs_total", &[("program", "kprobe_ipt_do_table")]);
            assert!(runs(&after) - runs(&previous) >= n, "round {round}: program runs not counted");
            assert!(after.sum("pathcost_probe_program_run_seconds_total", &[]) > 0.0);
        }
        assert_eq!(after.sum("pathcost_events_lost_total", &[("reason", "undecodable_events")]), 0.0);
        previous = after;
    }
    assert_eq!(backend.udp_received(), 2 * u64::from(CONNECTIONS), "the rules did not forward every connection");
    // --refresh 1s: detection runs again (each run takes a moment).
    let deadline = Instant::now() + Duration::from_secs(60);
    let runs = loop {
        let runs = scrape(&topo, address).one("pathcost_detection_runs_total", &[("outcome", "ok")]);
        if runs >= 2.0 || Instant::now() > deadline {
            break runs;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(runs >= 2.0, "detection was not refreshed: {runs} runs in a minute");

    // Shutdown.
    assert!(!loaded_ours().is_empty(), "pathcost serve has no program loaded?");
    // SAFETY: our own child, by its pid.
    assert_eq!(unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "pathcost serve still running 60 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "pathcost serve exited with {status}");
    server.wait_for_line("every probe is detached", Duration::from_secs(5));
    let left = loaded_ours_after_exit();
    assert!(left.is_empty(), "programs left after SIGTERM: {left:?}");
    let refused = topo.node.run(move || TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_err()).unwrap();
    assert!(refused, "still listening on {address} after exit");
}
