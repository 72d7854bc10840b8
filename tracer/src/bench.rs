//! `pathcost bench`: what pathcost itself costs, measured side by side in
//! one run on the synthetic cluster.
//!
//! - Added cost per packet: new UDP connections through kube-proxy-shaped
//!   iptables rules, timed from the client (a veth transmit runs the whole
//!   node path in the sender's softirq), with probes detached, attached,
//!   and detached again. Under emulation compare the ratio, not the ns.
//! - Event throughput: a flood of new connections with the probes attached;
//!   how many events per second reached userspace, and how many were lost.

use std::{net::SocketAddrV4, time::{Duration, Instant}};

use anyhow::Result;
use serde::Serialize;

use crate::{
    capabilities::kernel_release,
    collection::Losses,
    probes::{attach::AttachRequest, Backend, SITES},
    synthesis::{
        cluster::{Cluster, ClusterSpec, Protocol, SplitMix64},
        ipvs::Scheduler,
        program::{program, Mode},
        topology::Topology,
        traffic::{self, Pace},
    },
    trace::{Session, SessionOptions},
};

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub kernel: String,
    pub services: u32,
    pub packets_per_phase: u32,
    pub backend: String,
    /// Mean wall time per new connection seen by the sender (ns).
    pub detached_ns: f64,
    pub attached_ns: f64,
    pub detached_again_ns: f64,
    /// attached / mean(detached, detached again).
    pub overhead_ratio: f64,
    /// attached − mean(detached, detached again), ns per packet.
    pub added_ns_per_packet: f64,
    /// Probed calls per packet during the attached phase.
    pub calls_per_packet: f64,
    pub flood: FloodResult,
}

#[derive(Clone, Debug, Serialize)]
pub struct FloodResult {
    pub packets: u64,
    pub seconds: f64,
    /// Events delivered to userspace per second.
    pub events_per_second: f64,
    pub events: u64,
    pub losses: Losses,
}

/// Sends `count` new connections from fresh source ports; mean ns each.
fn timed_phase(topo: &Topology, cluster: &Cluster, count: u32, rng: &mut SplitMix64) -> Result<f64> {
    let targets = traffic::random_targets(cluster.service_ports(), count, rng);
    let started = Instant::now();
    let w = traffic::new_connections(topo, targets, Pace { rate: 0, max_time: Duration::from_secs(600) })?;
    // new_connections waits a fixed settle time at the end; leave it out.
    let elapsed = started.elapsed().saturating_sub(traffic::SETTLE);
    Ok(elapsed.as_nanos() as f64 / w.packets.max(1) as f64)
}

fn session(backend: Backend, topo: &Topology) -> Result<Session> {
    Session::start(&SessionOptions {
        request: AttachRequest {
            transit: false,
            sites: SITES.iter().filter(|s| s.default).collect(),
            explicit: false,
            backend,
            emit_events: true,
            bracket: Some(topo.bracket_filter()?),
        },
        calibrate: false,
        netns: Some(topo.node.inode()?),
        keep_calls: false,
    })
}

pub async fn run(backend: Backend, services: u32, packets: u32) -> Result<BenchReport> {
    let cluster = Cluster::new(ClusterSpec::new(services, 2).with_protocols(vec![Protocol::Udp]))?;
    // The source ports of the phases must not repeat: each phase uses the
    // traffic module's port range once, in a topology of its own.
    let mut rng = SplitMix64::new(7);
    let build = || -> Result<Topology> {
        let topo = Topology::build()?;
        program(Mode::IptablesLegacy, &cluster, Scheduler::default(), &topo.node)?;
        Ok(topo)
    };

    let topo = build()?;
    // Warm-up: first packets pay for caches and lazy set-up.
    timed_phase(&topo, &cluster, packets.min(200), &mut rng)?;
    drop(topo);

    let topo = build()?;
    let detached_ns = timed_phase(&topo, &cluster, packets, &mut rng)?;
    drop(topo);

    let topo = build()?;
    let mut s = session(backend, &topo)?;
    let attached_ns = timed_phase(&topo, &cluster, packets, &mut rng)?;
    s.collect_until(tokio::time::sleep(Duration::from_millis(300)), None, |_| {}).await?;
    let mechanisms = s.sites().iter().filter_map(|x| x.mechanism.map(|m| format!("{}={m}", x.site))).collect::<Vec<_>>();
    let (attached_report, _) = s.finish()?;
    drop(topo);

    let topo = build()?;
    let detached_again_ns = timed_phase(&topo, &cluster, packets, &mut rng)?;
    drop(topo);

    let flood = flood(backend, &cluster, packets.saturating_mul(4).min(traffic::MAX_CONNECTIONS), &mut rng).await?;

    let baseline = (detached_ns + detached_again_ns) / 2.0;
    // In-kernel counts: complete even if the ring overflowed meanwhile.
    let calls: u64 = attached_report.in_kernel.iter().map(|r| r.count).sum();
    Ok(BenchReport {
        kernel: kernel_release(),
        services,
        packets_per_phase: packets,
        backend: mechanisms.join(","),
        detached_ns,
        attached_ns,
        detached_again_ns,
        overhead_ratio: attached_ns / baseline,
        added_ns_per_packet: attached_ns - baseline,
        calls_per_packet: calls as f64 / f64::from(packets),
        flood,
    })
}

/// New connections as fast as the client can send them, probes attached,
/// while the reader drains the ring concurrently.
async fn flood(backend: Backend, cluster: &Cluster, packets: u32, rng: &mut SplitMix64) -> Result<FloodResult> {
    let topo = Topology::build()?;
    program(Mode::IptablesLegacy, cluster, Scheduler::default(), &topo.node)?;
    let mut s = session(backend, &topo)?;
    let targets: Vec<(Protocol, SocketAddrV4)> = traffic::random_targets(cluster.service_ports(), packets, rng);
    let started = Instant::now();
    let (topo, sent) = s
        .collect_during(move || {
            let sent = traffic::new_connections(&topo, targets, Pace { rate: 0, max_time: Duration::from_secs(120) });
            (topo, sent)
        })
        .await?;
    let sent = sent?;
    let seconds = started.elapsed().as_secs_f64();
    s.collect_until(tokio::time::sleep(Duration::from_millis(300)), None, |_| {}).await?;
    drop(topo);
    let (report, _) = s.finish()?;
    let events = report.losses.matched.saturating_sub(report.losses.ring_reserve_failures);
    Ok(FloodResult {
        packets: sent.packets,
        seconds,
        events_per_second: events as f64 / seconds,
        events,
        losses: report.losses,
    })
}
