//! `pathcost bench`: what pathcost itself costs, side by side in one run
//! with the tool a user would otherwise reach for, on the synthetic cluster.
//!
//! - Added cost per packet and per probed call: new UDP connections
//!   through kube-proxy-shaped iptables rules, the same number of them in
//!   each phase: nothing attached; the floor (empty entry/exit programs,
//!   same functions, same mechanisms); pathcost sending an event per call;
//!   pathcost aggregating in the kernel; bpftrace with kprobe/kretprobe
//!   pairs, a per-CPU depth stack and `hist()`. Each packet's node transit
//!   (tracepoints only, attached in every phase alike) is the primary
//!   figure: its median is in-kernel time, unmoved by how the sender's
//!   thread is scheduled, which the sender's wall time (kept beside it) is
//!   not on a shared machine. Under emulation compare ratios.
//! - The programs' own run time per call (BPF run-time statistics) beside
//!   the wall time, and the getppid calibration: where the time goes.
//! - Flood: as many new connections as the client can send, with each
//!   recording tracer attached: calls per second recorded, and what was lost.

use std::{
    collections::HashSet,
    net::SocketAddrV4,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::{
    bpftrace::{self, Bpftrace},
    capabilities::kernel_release,
    collection::{
        calibration::SelfCost,
        runtime::{self, PairRunTime, RunTimeStats},
        Losses,
    },
    probes::{attach::{attach_floor, AttachRequest, SiteStatus}, Backend, ProbeSite},
    synthesis::{
        cluster::{Cluster, ClusterSpec, Protocol, SplitMix64},
        ipvs::Scheduler,
        program::{program, Mode},
        topology::Topology,
        traffic::{self, Pace},
    },
    trace::{Session, SessionOptions},
};

/// The probe sites every tracer in the bench times.
const SITES: [&str; 2] = ["nf_hook_slow", "ipt_do_table"];

/// A way of timing the same calls, compared in the bench.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tracer {
    /// Empty entry/exit programs: the mechanism's own cost.
    Floor,
    /// pathcost sending one event per call through the ring buffer.
    PathcostEvents,
    /// pathcost keeping histograms in the kernel, no event per call.
    PathcostAggregate,
    /// bpftrace: kprobe/kretprobe pairs, a per-CPU depth stack, `hist()`.
    Bpftrace,
}

impl Tracer {
    pub fn how(self) -> &'static str {
        match self {
            Tracer::Floor => "empty entry/exit programs, same functions and mechanisms as pathcost",
            Tracer::PathcostEvents => "pathcost, one ring-buffer event per call",
            Tracer::PathcostAggregate => "pathcost, histograms in the kernel, no event per call",
            Tracer::Bpftrace => "bpftrace: kprobe/kretprobe pairs, per-CPU depth stack, hist() per function",
        }
    }
}

impl std::fmt::Display for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tracer::Floor => "floor",
            Tracer::PathcostEvents => "pathcost events",
            Tracer::PathcostAggregate => "pathcost aggregating",
            Tracer::Bpftrace => "bpftrace",
        })
    }
}

/// One tracer's phase of the side-by-side run.
#[derive(Clone, Debug, Serialize)]
pub struct TracerCost {
    pub tracer: Tracer,
    pub how: &'static str,
    /// Median transit per forwarded packet through the node (ns; median
    /// over rounds of each round's median).
    pub transit_p50_ns: f64,
    /// Median over rounds of the transit p50 minus the same round's
    /// detached transit p50 (ns): what the tracer adds inside the node.
    pub added_transit_ns: f64,
    /// The same per probed call inside the transit (node-namespace calls).
    pub added_ns_per_transit_call: f64,
    /// Wall time per new connection seen by the sender (ns; median over rounds).
    pub attached_ns: f64,
    /// Median over rounds of attached − the same round's detached, per packet (ns).
    pub added_ns_per_packet: f64,
    /// The same per probed call (the calls per packet pathcost counted).
    pub added_ns_per_call: f64,
    /// Transit added per call / bpftrace's.
    pub ratio_to_bpftrace: Option<f64>,
    /// Transit added per call / the floor's.
    pub floor_multiple: Option<f64>,
    /// Time inside the tracer's own programs per call (BPF run-time
    /// statistics): the rest of the added cost is the mechanism's.
    pub program_run_ns_per_call: Option<f64>,
    /// Calls the tracer recorded in the phase (none for the floor).
    pub calls_recorded: Option<u64>,
    /// The per-call correction calibrated in the path (pathcost's phases
    /// only): the floor's added transit per call (the mechanism's own cost,
    /// measured on the probed functions themselves) plus the run time this
    /// tracer's programs spend beyond the floor's empty ones. Set against
    /// `added_ns_per_transit_call` it shows what such a correction would
    /// leave unexplained; the getppid pair is `calibrated_pair_ns_per_call`.
    pub path_correction_ns_per_call: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub kernel: String,
    pub services: u32,
    /// New connections per tracer (and detached), over all rounds.
    pub packets_per_phase: u32,
    /// Rounds the phases were split into (see `ROUNDS`).
    pub rounds: u32,
    /// Sites and the mechanism pathcost used for each (the floor uses the same).
    pub backend: String,
    /// Median transit per packet with nothing attached (ns; median over rounds).
    pub detached_transit_p50_ns: f64,
    /// Probed calls per packet inside the transit (the node namespace's).
    pub transit_calls_per_packet: f64,
    /// Wall time per new connection with nothing attached (ns): the median
    /// over rounds, and the first and last rounds' (drift over the run).
    pub detached_ns: f64,
    pub detached_first_last_ns: (f64, f64),
    /// Probed calls per packet, counted in the kernel by pathcost.
    pub calls_per_packet: f64,
    /// The getppid calibration: what one pair adds per call there.
    pub self_cost: Vec<SelfCost>,
    /// The calibrated pair cost per probed call, each site's mechanism
    /// weighted by its calls: what the corrections assume a pair adds, to
    /// set against `added_ns_per_transit_call` measured in the path.
    pub calibrated_pair_ns_per_call: Option<f64>,
    /// pathcost's programs' run time per site pair (events phase).
    pub program_run: Vec<PairRunTime>,
    pub tracers: Vec<TracerCost>,
    pub flood: Vec<FloodResult>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FloodResult {
    pub tracer: Tracer,
    pub packets: u64,
    pub seconds: f64,
    /// Calls the tracer recorded (events delivered, or calls in its
    /// histograms) per second of the flood.
    pub calls_per_second: f64,
    pub calls: u64,
    /// Calls the tracer lost, where it counts them (pathcost: ring reserve
    /// failures, unmatched exits, orphaned frames, depth overflows; bpftrace
    /// does not count kretprobe misses or dropped map updates).
    pub lost: Option<u64>,
    pub losses: Option<Losses>,
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

fn session(backend: Backend, topo: &Topology, emit_events: bool, calibrate: bool) -> Result<Session> {
    Session::start(&SessionOptions {
        request: AttachRequest {
            transit: false,
            sites: SITES.iter().filter_map(|s| ProbeSite::by_name(s)).collect(),
            explicit: true,
            backend,
            emit_events,
            bracket: Some(topo.bracket_filter()?),
        },
        calibrate,
        netns: Some(topo.node.inode()?),
        keep_calls: false,
    })
}

/// The transit alone: attached in every phase, the same way, so its
/// median is comparable between them.
fn transit_session(backend: Backend, topo: &Topology) -> Result<Session> {
    Session::start(&SessionOptions {
        request: AttachRequest {
            sites: Vec::new(),
            explicit: false,
            backend,
            emit_events: true,
            bracket: Some(topo.bracket_filter()?),
            transit: true,
        },
        calibrate: false,
        netns: Some(topo.node.inode()?),
        keep_calls: false,
    })
}

/// Median transit of a finished transit session's packets (ns).
fn transit_p50(report: &crate::trace::TraceReport) -> f64 {
    report.rows.iter().find(|r| r.site == crate::probes::TRANSIT.name).map_or(f64::NAN, |r| r.inclusive.p50_ns as f64)
}

/// One timed phase: the transit session and `tracer` (if any) attached,
/// the same traffic; (transit p50 ns, wall ns per packet, what the tracer
/// recorded).
async fn phase(
    tracer: Option<Tracer>,
    backend: Backend,
    cluster: &Cluster,
    sites: &[SiteStatus],
    packets: u32,
    rng: &mut SplitMix64,
) -> Result<(f64, f64, Option<Recorded>)> {
    let topo = Topology::build()?;
    program(Mode::IptablesLegacy, cluster, Scheduler::default(), &topo.node)?;
    let mut transit = transit_session(backend, &topo)?;
    let mut attached = tracer.map(|t| attach(t, backend, &topo, sites, false)).transpose()?;
    let wall_ns = timed_phase(&topo, cluster, packets, rng)?;
    let recorded = match attached.take() {
        Some(mut a) => {
            if let Attached::Pathcost(s) = &mut a {
                s.drain();
            }
            Some(a.finish().await?)
        }
        None => None,
    };
    transit.drain();
    let (transit_report, _) = transit.finish()?;
    Ok((transit_p50(&transit_report), wall_ns, recorded))
}

/// A tracer attached for one phase.
enum Attached {
    Floor { ebpf: aya::Ebpf, _stats: Option<RunTimeStats> },
    Pathcost(Box<Session>),
    Bpftrace { bpftrace: Bpftrace, before: HashSet<u32>, _stats: Option<RunTimeStats> },
}

/// What a tracer recorded in a phase.
struct Recorded {
    calls: Option<u64>,
    lost: Option<u64>,
    losses: Option<Losses>,
    program_run_ns_per_call: Option<f64>,
    report: Option<crate::trace::TraceReport>,
}

/// Mean of the pairs' run time per call, weighted by their calls.
fn weighted_ns_per_call(pairs: &[PairRunTime]) -> Option<f64> {
    let calls: u64 = pairs.iter().map(|p| p.calls).sum();
    (calls > 0).then(|| pairs.iter().map(|p| p.ns_per_call * p.calls as f64).sum::<f64>() / calls as f64)
}

fn attach(tracer: Tracer, backend: Backend, topo: &Topology, sites: &[SiteStatus], calibrate: bool) -> Result<Attached> {
    let stats = || RunTimeStats::enable().inspect_err(|why| log::warn!("{why}")).ok();
    Ok(match tracer {
        Tracer::Floor => Attached::Floor { _stats: stats(), ebpf: attach_floor(sites)? },
        Tracer::PathcostEvents => Attached::Pathcost(Box::new(session(backend, topo, true, calibrate)?)),
        Tracer::PathcostAggregate => Attached::Pathcost(Box::new(session(backend, topo, false, calibrate)?)),
        Tracer::Bpftrace => {
            let before = runtime::loaded_program_ids();
            let _stats = stats();
            let bpftrace = Bpftrace::start(&bpftrace::timed_calls_hist(&SITES)).context("starting bpftrace")?;
            Attached::Bpftrace { bpftrace, before, _stats }
        }
    })
}

impl Attached {
    /// Runs blocking `work` while the tracer collects (pathcost drains its
    /// ring meanwhile, as `trace` does).
    async fn during<T: Send + 'static>(&mut self, work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        match self {
            Attached::Pathcost(s) => s.collect_during(work).await,
            _ => tokio::task::spawn_blocking(work).await.context("the traffic thread panicked"),
        }
    }

    async fn finish(self) -> Result<Recorded> {
        Ok(match self {
            Attached::Floor { ebpf, _stats } => Recorded {
                calls: None,
                lost: None,
                losses: None,
                program_run_ns_per_call: weighted_ns_per_call(&runtime::pair_run_times(&runtime::program_run_times(&ebpf))),
                report: None,
            },
            Attached::Pathcost(mut s) => {
                s.collect_until(tokio::time::sleep(Duration::from_millis(300)), None, |_| {}).await?;
                let (report, _) = s.finish()?;
                let l = &report.losses;
                let lost = l.ring_reserve_failures + l.unmatched_exits + l.orphaned_frames + l.depth_overflows;
                let site_pairs: Vec<PairRunTime> =
                    report.program_run.iter().filter(|p| !p.entry.contains("calibration")).cloned().collect();
                // Counted in the kernel (all namespaces, the calibration
                // pair left out): what the histograms hold; with events, less
                // what the ring had no room for.
                let in_kernel: u64 = report.in_kernel.iter().map(|k| k.count).sum();
                Recorded {
                    calls: Some(in_kernel.saturating_sub(l.ring_reserve_failures)),
                    lost: Some(lost),
                    losses: Some(report.losses),
                    program_run_ns_per_call: weighted_ns_per_call(&site_pairs),
                    report: Some(report),
                }
            }
            Attached::Bpftrace { bpftrace, before, _stats } => {
                // Read the programs' counters before bpftrace unloads them.
                let programs = runtime::programs_loaded_since(&before);
                let out = bpftrace.stop()?;
                let calls = bpftrace::hist_total(&out);
                Recorded {
                    calls: Some(calls),
                    lost: None,
                    losses: None,
                    program_run_ns_per_call: runtime::run_ns_per_call(&programs, calls),
                    report: None,
                }
            }
        })
    }
}

/// Rounds of the side-by-side run. Each round times every tracer and the
/// detached path once, in a rotated order, so a burst of load from other
/// work on the machine lands in one round's phases rather than in one
/// tracer's figures; each figure is the median over rounds of the
/// difference to the same round's detached phase.
const ROUNDS: u32 = 4;

/// The phases of one round; `None` is the detached path.
const PHASES: [Option<Tracer>; 5] =
    [None, Some(Tracer::Floor), Some(Tracer::PathcostEvents), Some(Tracer::PathcostAggregate), Some(Tracer::Bpftrace)];

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}

/// What the rounds gathered for one tracer.
#[derive(Default)]
struct Samples {
    ns_per_packet: Vec<f64>,
    added: Vec<f64>,
    /// Transit p50 per round, and its difference to the round's detached one.
    transit: Vec<f64>,
    added_transit: Vec<f64>,
    calls: u64,
    /// Σ run ns per call × calls, to weight rounds by their calls.
    run_weighted: f64,
    run_calls: u64,
}

pub async fn run(backend: Backend, services: u32, packets: u32) -> Result<BenchReport> {
    let cluster = Cluster::new(ClusterSpec::new(services, 2).with_protocols(vec![Protocol::Udp]))?;
    // The source ports of the phases must not repeat: each phase uses the
    // traffic module's port range once, in a topology of its own.
    let mut rng = SplitMix64::new(7);
    // Set-up and warm-up (first packets pay for caches and lazy set-up):
    // pathcost picks the mechanisms the floor copies and runs the getppid
    // calibration.
    let topo = Topology::build()?;
    program(Mode::IptablesLegacy, &cluster, Scheduler::default(), &topo.node)?;
    let setup = session(backend, &topo, true, true)?;
    let sites: Vec<SiteStatus> = setup.sites().to_vec();
    let self_cost = setup.corrections().costs.clone();
    timed_phase(&topo, &cluster, packets.min(200), &mut rng)?;
    drop(setup);
    drop(topo);

    let per_round = (packets / ROUNDS).max(10);
    let mut samples: Vec<Samples> = PHASES.iter().map(|_| Samples::default()).collect();
    let mut program_run = Vec::new();
    let mut events_packets = 0u64;
    let mut events_calls = 0u64;
    let mut transit_calls = 0u64;
    for round in 0..ROUNDS as usize {
        let mut detached = (f64::NAN, f64::NAN);
        let mut timed: Vec<(usize, f64, f64)> = Vec::new();
        for k in 0..PHASES.len() {
            let i = (k + round) % PHASES.len();
            let (transit, ns, rec) = phase(PHASES[i], backend, &cluster, &sites, per_round, &mut rng).await?;
            let s = &mut samples[i];
            s.ns_per_packet.push(ns);
            s.transit.push(transit);
            let (Some(tracer), Some(rec)) = (PHASES[i], rec) else {
                detached = (transit, ns);
                continue;
            };
            s.calls += rec.calls.unwrap_or(0);
            if let Some(run) = rec.program_run_ns_per_call {
                // The floor records no calls: weight its rounds equally.
                let calls = rec.calls.unwrap_or(1).max(1);
                s.run_weighted += run * calls as f64;
                s.run_calls += calls;
            }
            if tracer == Tracer::PathcostEvents {
                let report = rec.report.as_ref();
                // In-kernel counts: complete even if the ring overflowed.
                events_calls += report.map_or(0, |r| r.in_kernel.iter().map(|k| k.count).sum::<u64>());
                events_packets += u64::from(per_round);
                // The node namespace's calls: those inside the transit.
                transit_calls += report.map_or(0, |r| r.rows.iter().map(|row| row.inclusive.count).sum::<u64>());
                if program_run.is_empty() {
                    program_run = report.map(|r| r.program_run.clone()).unwrap_or_default();
                }
            }
            timed.push((i, transit, ns));
        }
        for (i, transit, ns) in timed {
            samples[i].added.push(ns - detached.1);
            samples[i].added_transit.push(transit - detached.0);
        }
    }
    let detached_ns = median(&mut samples[0].ns_per_packet.clone());
    let detached_transit_p50_ns = median(&mut samples[0].transit.clone());
    let transit_calls_per_packet = transit_calls as f64 / events_packets.max(1) as f64;
    let first_last = (samples[0].ns_per_packet[0], *samples[0].ns_per_packet.last().unwrap_or(&f64::NAN));

    let mut flood = Vec::new();
    let flood_packets = packets.saturating_mul(4).min(traffic::MAX_CONNECTIONS);
    for tracer in [Tracer::PathcostEvents, Tracer::PathcostAggregate, Tracer::Bpftrace] {
        flood.push(flood_one(tracer, backend, &cluster, flood_packets, &mut rng).await?);
    }

    let calls_per_packet = events_calls as f64 / events_packets.max(1) as f64;
    let mut tracers: Vec<TracerCost> = PHASES
        .iter()
        .zip(samples.iter_mut())
        .filter_map(|(tracer, s)| {
            let added = median(&mut s.added);
            let added_transit = median(&mut s.added_transit);
            Some(TracerCost {
                tracer: (*tracer)?,
                how: (*tracer)?.how(),
                transit_p50_ns: median(&mut s.transit),
                added_transit_ns: added_transit,
                added_ns_per_transit_call: added_transit / transit_calls_per_packet.max(f64::MIN_POSITIVE),
                attached_ns: median(&mut s.ns_per_packet),
                added_ns_per_packet: added,
                added_ns_per_call: added / calls_per_packet.max(f64::MIN_POSITIVE),
                ratio_to_bpftrace: None,
                floor_multiple: None,
                program_run_ns_per_call: (s.run_calls > 0).then(|| s.run_weighted / s.run_calls as f64),
                calls_recorded: ((*tracer)? != Tracer::Floor).then_some(s.calls),
                path_correction_ns_per_call: None,
            })
        })
        .collect();
    // Ratios from the transit: in-kernel time, robust to the sender's scheduling.
    let per_call = |t: Tracer, all: &[TracerCost]| all.iter().find(|c| c.tracer == t).map(|c| c.added_ns_per_transit_call);
    let (bpftrace_call, floor_call) = (per_call(Tracer::Bpftrace, &tracers), per_call(Tracer::Floor, &tracers));
    let floor_programs = tracers.iter().find(|c| c.tracer == Tracer::Floor).and_then(|c| c.program_run_ns_per_call);
    for t in &mut tracers {
        t.ratio_to_bpftrace = bpftrace_call.map(|b| t.added_ns_per_transit_call / b);
        t.floor_multiple = floor_call.map(|f| t.added_ns_per_transit_call / f);
        if matches!(t.tracer, Tracer::PathcostEvents | Tracer::PathcostAggregate) {
            t.path_correction_ns_per_call = path_correction(floor_call, floor_programs, t.program_run_ns_per_call);
        }
    }
    let calibrated_pair_ns_per_call = calibrated_per_call(&self_cost, &program_run);
    Ok(BenchReport {
        kernel: kernel_release(),
        services,
        packets_per_phase: per_round * ROUNDS,
        rounds: ROUNDS,
        backend: sites.iter().filter_map(|x| x.mechanism.map(|m| format!("{}={m}", x.site))).collect::<Vec<_>>().join(","),
        detached_transit_p50_ns,
        transit_calls_per_packet,
        detached_ns,
        detached_first_last_ns: first_last,
        calls_per_packet,
        self_cost,
        calibrated_pair_ns_per_call,
        program_run,
        tracers,
        flood,
    })
}

/// A correction calibrated in the path: the floor's added cost per call
/// (entry and exit mechanism plus empty programs, on the probed functions)
/// and the tracer's programs' run time above the empty programs'. `None`
/// unless all three were measured.
fn path_correction(floor_added: Option<f64>, floor_programs: Option<f64>, programs: Option<f64>) -> Option<f64> {
    Some(floor_added? + (programs? - floor_programs?).max(0.0))
}

/// The getppid pair cost of each site's mechanism, weighted by the site's
/// calls (its entry program's runs); `None` without calibration or calls.
fn calibrated_per_call(costs: &[SelfCost], pairs: &[PairRunTime]) -> Option<f64> {
    let mut weighted = 0.0;
    let mut calls = 0u64;
    for p in pairs.iter().filter(|p| !p.entry.contains("calibration")) {
        let mechanism = if p.entry.starts_with("fentry") { "fentry" } else { "kprobe" };
        let cost = costs.iter().find(|c| c.mechanism == mechanism)?;
        weighted += cost.pair_ns * p.calls as f64;
        calls += p.calls;
    }
    (calls > 0).then(|| weighted / calls as f64)
}

/// New connections as fast as the client can send them with `tracer`
/// attached; pathcost's reader drains the ring concurrently.
async fn flood_one(tracer: Tracer, backend: Backend, cluster: &Cluster, packets: u32, rng: &mut SplitMix64) -> Result<FloodResult> {
    let topo = Topology::build()?;
    program(Mode::IptablesLegacy, cluster, Scheduler::default(), &topo.node)?;
    let mut attached = attach(tracer, backend, &topo, &[], false)?;
    let targets: Vec<(Protocol, SocketAddrV4)> = traffic::random_targets(cluster.service_ports(), packets, rng);
    let started = Instant::now();
    let (topo, sent) = attached
        .during(move || {
            let sent = traffic::new_connections(&topo, targets, Pace { rate: 0, max_time: Duration::from_secs(120) });
            (topo, sent)
        })
        .await?;
    let sent = sent?;
    let seconds = started.elapsed().as_secs_f64();
    let rec = attached.finish().await?;
    drop(topo);
    let calls = rec.calls.unwrap_or(0);
    Ok(FloodResult {
        tracer,
        packets: sent.packets,
        seconds,
        calls_per_second: calls as f64 / seconds,
        calls,
        lost: rec.lost,
        losses: rec.losses,
    })
}

#[cfg(test)]
mod tests {
    use super::path_correction;

    #[test]
    fn path_correction_adds_the_floor_and_the_programs_above_it() {
        // Floor: 1,260 ns added per call, 193 ns of it in its empty programs;
        // pathcost's programs 1,223 ns: 1,030 ns more body than the floor.
        assert_eq!(path_correction(Some(1260.0), Some(193.0), Some(1223.0)), Some(2290.0));
        // Programs cheaper than the empty ones (noise): never below the floor.
        assert_eq!(path_correction(Some(1260.0), Some(193.0), Some(150.0)), Some(1260.0));
        assert_eq!(path_correction(None, Some(193.0), Some(1223.0)), None);
        assert_eq!(path_correction(Some(1260.0), None, Some(1223.0)), None);
    }
}
