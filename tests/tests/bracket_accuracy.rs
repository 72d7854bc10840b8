//! How far the tracepoint spans can be trusted: the same packets, in the
//! same run, timed by pathcost's bracket (or transit) and by an independent
//! bpftrace script on the same two tracepoints (bpftrace from Debian's
//! packages). Counts must be equal and the means within 10%. Host or VM, as
//! root; in the VM bpftrace is part of the image and these tests must run.
//!
//! Who sees whose cost: bpftrace attaches first, and a tracepoint calls its
//! attached handlers in the order they were attached, so at both ends
//! bpftrace's handler runs before pathcost's. Each span therefore contains
//! exactly one handler of the other instrument: bpftrace's span holds
//! pathcost's open handler (it runs after bpftrace took its start time),
//! pathcost's span holds bpftrace's close handler (it runs before pathcost
//! takes its end time). The two nearly cancel instead of adding up, so the
//! means are compared directly; their difference, printed, is the order
//! effect (a few µs under TCG at most, under 10% of a walk of 1,000 services).

use std::time::Duration;

use pathcost_tests::{bpftrace_skip_reason, bpftrace_stats, skip, Bpftrace};
use tracer::{
    probes::{attach::AttachRequest, Backend},
    synthesis::{
        cluster::{Cluster, ClusterSpec, Protocol, SplitMix64},
        ipvs::Scheduler,
        program::{program, Mode},
        topology::Topology,
        traffic::{self, Pace},
    },
    trace::{Session, SessionOptions},
};

/// Enough packets that the means are stable to a few percent under TCG.
const CONNECTIONS: u32 = 1000;

/// The bracket, written independently: open at netif_receive_skb on the
/// ingress device of the node namespace, close at the same CPU's next
/// fib_table_lookup whose input interface is that device.
fn bracket_script(ifindex: u32, netns: u32, _egress: u32) -> String {
    format!(
        r#"
tracepoint:net:netif_receive_skb
/((struct sk_buff *)args->skbaddr)->dev->ifindex == {ifindex} &&
 ((struct sk_buff *)args->skbaddr)->dev->nd_net.net->ns.inum == {netns}/
{{
  @start[cpu] = nsecs;
}}
tracepoint:fib:fib_table_lookup
/@start[cpu] != 0 && args->iif == {ifindex}/
{{
  @span = stats(nsecs - @start[cpu]);
  delete(@start[cpu]);
}}
END {{ clear(@start); }}
"#
    )
}

/// The transit, written independently: keyed by the skb (pathcost keys it
/// by CPU and checks the skb), from its receipt on the ingress device to
/// its transmission on the egress device, both in the node namespace.
fn transit_script(ifindex: u32, netns: u32, egress: u32) -> String {
    format!(
        r#"
tracepoint:net:netif_receive_skb
/((struct sk_buff *)args->skbaddr)->dev->ifindex == {ifindex} &&
 ((struct sk_buff *)args->skbaddr)->dev->nd_net.net->ns.inum == {netns}/
{{
  @start[args->skbaddr] = nsecs;
}}
tracepoint:net:net_dev_start_xmit
/@start[args->skbaddr] != 0 &&
 ((struct sk_buff *)args->skbaddr)->dev->ifindex == {egress} &&
 ((struct sk_buff *)args->skbaddr)->dev->nd_net.net->ns.inum == {netns}/
{{
  @span = stats(nsecs - @start[args->skbaddr]);
  delete(@start[args->skbaddr]);
}}
END {{ clear(@start); }}
"#
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Span {
    Bracket,
    Transit,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bracket_agrees_with_an_independent_bpftrace_measurement() {
    compare(Span::Bracket, "bracket_agrees_with_an_independent_bpftrace_measurement").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transit_agrees_with_an_independent_bpftrace_measurement() {
    compare(Span::Transit, "transit_agrees_with_an_independent_bpftrace_measurement").await;
}

/// The two spans share the ingress tracepoint, so the tests take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn compare(span: Span, name: &str) {
    let _serial = SERIAL.lock().await;
    if let Some(why) = bpftrace_skip_reason() {
        return skip(name, &why);
    }
    if let Some(why) = tracer::capabilities::bracket_unavailable_reason()
        .or_else(|| Mode::IptablesLegacy.unavailable_reason(Scheduler::default()))
    {
        return skip(name, &why);
    }

    let cluster = Cluster::new(ClusterSpec::new(1000, 2).with_protocols(vec![Protocol::Udp])).unwrap();
    let topo = Topology::build().unwrap();
    program(Mode::IptablesLegacy, &cluster, Scheduler::default(), &topo.node).unwrap();
    let filter = topo.bracket_filter().unwrap();

    // bpftrace first (see the module header for what the order means).
    let (script, site, backend) = match span {
        Span::Bracket => (bracket_script as fn(u32, u32, u32) -> String, "prerouting_bracket", Backend::Bracket),
        Span::Transit => (transit_script as fn(u32, u32, u32) -> String, "transit", Backend::Auto),
    };
    let bpftrace = Bpftrace::start(&script(filter.ifindex, filter.netns, filter.egress_ifindex));
    let mut session = Session::start(&SessionOptions {
        request: AttachRequest {
            sites: Vec::new(),
            explicit: false,
            backend,
            emit_events: true,
            bracket: Some(filter),
            transit: span == Span::Transit,
        },
        calibrate: false,
        netns: Some(filter.netns),
        keep_calls: false,
    })
    .unwrap();
    let targets = traffic::random_targets(cluster.service_ports(), CONNECTIONS, &mut SplitMix64::new(9));
    traffic::new_connections(&topo, targets, Pace { rate: 2000, max_time: Duration::from_secs(300) }).unwrap();
    session.collect_until(tokio::time::sleep(Duration::from_millis(300)), None, |_| {}).await.unwrap();
    let (report, _) = session.finish().unwrap();
    let output = bpftrace.stop();
    let theirs = bpftrace_stats(&output, "span").unwrap_or_else(|| panic!("no @span in bpftrace output: {output}"));

    let row = report.rows.iter().find(|r| r.site == site).unwrap_or_else(|| panic!("no {site} row: {:#?}", report.rows));
    let ours = &row.inclusive;
    let ratio = ours.mean_ns / theirs.mean_ns;
    eprintln!(
        "{site} accuracy on {}: pathcost {} packets, mean {:.0} ns; bpftrace {} packets, mean {:.0} ns; \
         difference {:+.0} ns (order effect); ratio {ratio:.3}",
        report.kernel,
        ours.count,
        ours.mean_ns,
        theirs.count,
        theirs.mean_ns,
        ours.mean_ns - theirs.mean_ns,
    );
    assert_eq!(ours.count, u64::from(CONNECTIONS));
    assert_eq!(theirs.count, u64::from(CONNECTIONS));
    assert!((0.9..=1.1).contains(&ratio), "pathcost/bpftrace {site} mean ratio {ratio:.3} is outside 0.9..=1.1");
}
