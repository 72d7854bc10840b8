//! `pathcost sweep`: for each kube-proxy mode and service count, build the
//! synthetic cluster in private namespaces, program it, drive real traffic
//! through it twice (with only the transit tracepoints attached, then with
//! the function probes), and record cost against N. Each point's result is
//! written as soon as it exists, so a later failure loses nothing.

use std::{
    future::Future,
    net::SocketAddrV4,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use tracer_ebpf::SiteId;

use crate::{
    capabilities::kernel_release,
    collection::{calibration::Corrections, Call},
    probes::{attach::AttachRequest, Backend, ProbeSite, SITES},
    results::{LookupFigure, Point, Results, Settings, Skipped, TrafficCounts, SCHEMA_VERSION},
    statistics::{new_histogram, packets::PacketTotals, Summary},
    synthesis::{
        cluster::{Cluster, ClusterSpec, MissTarget, Protocol, SpecError, SplitMix64},
        ipvs::Scheduler,
        program::{program, Mode},
        topology::Topology,
        traffic::{self, Pace, Window},
    },
    trace::{Session, SessionOptions, TraceReport},
};

/// Everything a sweep needs, validated by the CLI.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    pub modes: Vec<Mode>,
    pub services: Vec<u32>,
    pub endpoints: u32,
    pub protocols: Vec<Protocol>,
    pub connections: u32,
    pub miss: u32,
    pub established_flows: u32,
    pub packets_per_flow: u32,
    pub scheduler: Scheduler,
    pub backend: Backend,
    pub pace: Pace,
    pub seed: u64,
    /// Directory for `results.json`; `None`: keep results in memory only.
    pub output: Option<PathBuf>,
}

/// Port every synthetic service listens on (docs/kube-proxy-rules.md#the-synthetic-cluster).
const SERVICE_PORT: u16 = 80;

/// Netfilter time per packet for the calls that started inside `window`:
/// (corrected for the probes' own cost, raw).
fn per_packet(calls: &[Call], window: &Window, corrections: &Corrections) -> (Summary, Summary) {
    let mut totals = PacketTotals::default();
    for c in calls.iter().filter(|c| window.contains(c.start_ns)) {
        totals.record(c, corrections);
    }
    totals.flush();
    (Summary::of(&totals.per_packet_corrected), Summary::of(&totals.per_packet))
}

/// One figure per call that started inside `window` and that `wanted`
/// selects. Each such call is one packet's (a transit; a lookup, which a
/// packet makes once): calls are not grouped by skb, whose address the
/// kernel reuses from one packet to the next.
fn per_call(
    calls: &[Call],
    window: &Window,
    wanted: impl Fn(&Call) -> bool,
    figure: impl Fn(&Call) -> u64,
) -> Summary {
    let mut histogram = new_histogram();
    for c in calls.iter().filter(|c| window.contains(c.start_ns) && wanted(c)) {
        histogram.saturating_record(figure(c).max(1));
    }
    Summary::of(&histogram)
}

/// The transit of each forwarded packet (one span per packet).
fn transit(calls: &[Call], window: &Window) -> Summary {
    per_call(calls, window, |c| c.site == SiteId::Transit, |c| c.duration_ns)
}

/// The work that finds a new connection's service and backend, per mode
/// (see `Mode::lookup`): the call's time without the forwarding IPVS does
/// from inside its hook.
fn lookup(mode: Mode, calls: &[Call], window: &Window) -> Summary {
    per_call(calls, window, |c| mode.lookup().matches(c), |c| c.duration_ns.saturating_sub(c.transmit_ns))
}

fn mechanisms(sites: &[crate::probes::attach::SiteStatus]) -> String {
    let mut used: Vec<String> = sites.iter().filter_map(|s| s.mechanism.map(|m| m.to_string())).collect();
    used.sort();
    used.dedup();
    used.join("+")
}

/// Writes the results so far, atomically; a sweep killed later keeps what
/// it measured.
fn save(results: &Results, dir: &Path) -> Result<()> {
    crate::output::write_file(&dir.join("results.json"), results.to_json()?.as_bytes())
}

/// The cluster a sweep point with `services` services programs. Each N gets
/// its own seed derived from the sweep's, so points differ in KUBE-SERVICES
/// order while a rerun is identical. `pathcost rules` builds its cluster
/// here too, so it prints the ruleset of the very same point.
pub fn point_cluster(services: u32, endpoints: u32, protocols: &[Protocol], seed: u64) -> Result<Cluster, SpecError> {
    Cluster::new(
        ClusterSpec::new(services, endpoints)
            .with_protocols(protocols.to_vec())
            .with_seed(seed ^ u64::from(services)),
    )
}


/// The traffic of one phase, drawn before it starts.
struct PhaseTraffic {
    new: Vec<(Protocol, SocketAddrV4)>,
    miss: Vec<(Protocol, SocketAddrV4)>,
    flows: Vec<SocketAddrV4>,
}

impl PhaseTraffic {
    fn draw(opts: &SweepOptions, cluster: &Cluster, rng: &mut SplitMix64, miss: u32) -> Result<PhaseTraffic> {
        let new = traffic::random_targets(cluster.service_ports(), opts.connections, rng);
        let miss_ip = cluster
            .miss_address(MissTarget::UnallocatedClusterIp)
            .context("no unallocated service address for miss traffic")?;
        let miss = vec![(Protocol::Udp, SocketAddrV4::new(miss_ip, SERVICE_PORT)); miss as usize];
        // Established flows need a UDP service to echo.
        let udp_ports: Vec<SocketAddrV4> = cluster
            .service_ports()
            .iter()
            .filter(|p| p.protocol == Protocol::Udp)
            .map(|p| SocketAddrV4::new(p.cluster_ip, p.port))
            .collect();
        let flows = if udp_ports.is_empty() {
            Vec::new()
        } else {
            (0..opts.established_flows).map(|_| udp_ports[rng.below(udp_ports.len() as u64) as usize]).collect()
        };
        Ok(PhaseTraffic { new, miss, flows })
    }
}

/// The traffic windows of one phase: new connections, miss, established.
struct PhaseWindows {
    new: Window,
    miss: Window,
    established: Window,
}

/// Sends one phase's traffic on its own thread while the session drains
/// the ring here (so a large --connections does not outgrow the ring), then
/// lets the reader catch up and detaches.
async fn run_phase(
    mut session: Session,
    topo: Topology,
    backend: traffic::Backend,
    plan: PhaseTraffic,
    opts: &SweepOptions,
) -> Result<(Topology, traffic::Backend, PhaseWindows, TraceReport, Vec<Call>)> {
    let (pace, packets_per_flow) = (opts.pace, opts.packets_per_flow);
    let (topo, backend, windows) = session
        .collect_during(move || {
            let windows = (|| -> Result<PhaseWindows> {
                let new = traffic::new_connections(&topo, plan.new, pace)?;
                let miss = if plan.miss.is_empty() { Window::default() } else { traffic::new_connections(&topo, plan.miss, pace)? };
                let established = if plan.flows.is_empty() {
                    Window::default()
                } else {
                    traffic::established_packets(&topo, &backend, plan.flows, packets_per_flow, pace)?
                };
                Ok(PhaseWindows { new, miss, established })
            })();
            (topo, backend, windows)
        })
        .await?;
    let windows = windows?;
    session.collect_until(tokio::time::sleep(Duration::from_millis(300)), None, |_| {}).await?;
    let (report, calls) = session.finish()?;
    Ok((topo, backend, windows, report, calls))
}

/// One (mode, N) point: program, then two traffic phases, then tear down.
///
/// 1. Transit only: the two transit tracepoints and nothing else, so the
///    cross-mode figure is not inflated by function probes (which add their
///    own cost to every call, and the modes do not meet the same number of
///    probed calls).
/// 2. Probed: the function probes (or the bracket), for the lookup, the
///    per-site rows and the per-packet netfilter time.
async fn measure_point(
    opts: &SweepOptions,
    mode: Mode,
    services: u32,
    mut progress: impl FnMut(&str),
) -> Result<Point> {
    let cluster = point_cluster(services, opts.endpoints, &opts.protocols, opts.seed)?;
    let topo = Topology::build()?;
    progress("programming");
    let program_time = program(mode, &cluster, opts.scheduler, &topo.node)
        .with_context(|| format!("programming {mode} for {services} services"))?;
    let backend = traffic::Backend::start(&topo, SERVICE_PORT)?;
    let filter = topo.bracket_filter()?;
    let netns = Some(topo.node.inode()?);
    let mut rng = SplitMix64::new(opts.seed ^ 0x5eed);

    progress(&format!("programmed in {:.0} ms; transit phase", program_time.as_secs_f64() * 1000.0));
    let transit_only = Session::start(&SessionOptions {
        request: AttachRequest {
            sites: Vec::new(),
            explicit: false,
            backend: opts.backend,
            emit_events: true,
            bracket: Some(filter),
            transit: true,
        },
        calibrate: false,
        netns,
        keep_calls: true,
    })?;
    let plan = PhaseTraffic::draw(opts, &cluster, &mut rng, 0)?;
    let (topo, backend, transit_windows, transit_report, transit_calls) =
        run_phase(transit_only, topo, backend, plan, opts).await?;

    progress("probed phase");
    let probed = Session::start(&SessionOptions {
        request: AttachRequest {
            sites: SITES.iter().filter(|s| s.default).collect(),
            explicit: false,
            backend: opts.backend,
            emit_events: true,
            bracket: Some(filter),
            transit: false,
        },
        calibrate: true,
        netns,
        keep_calls: true,
    })?;
    let sites = probed.sites().to_vec();
    let corrections = probed.corrections().clone();
    let plan = PhaseTraffic::draw(opts, &cluster, &mut rng, opts.miss)?;
    let (topo, backend, windows, report, calls) = run_phase(probed, topo, backend, plan, opts).await?;
    drop(backend);
    drop(topo);

    let (per_new_connection, per_new_connection_raw) = per_packet(&calls, &windows.new, &corrections);
    let (per_established_packet, per_established_packet_raw) =
        per_packet(&calls, &windows.established, &corrections);
    let (per_miss_packet, per_miss_packet_raw) = per_packet(&calls, &windows.miss, &corrections);
    // The bracket times all PREROUTING hooks together: it cannot isolate
    // the lookup (and IPVS looks up at LOCAL_IN, after it).
    let lookup_mechanism = sites
        .iter()
        .find(|s| ProbeSite::by_name(s.site).is_some_and(|p| p.id == mode.lookup().site))
        .and_then(|s| s.mechanism);
    let lookup_new_connection = lookup_mechanism.map(|m| LookupFigure {
        what: mode.lookup().describe(),
        mechanism: m,
        summary: lookup(mode, &calls, &windows.new),
    });
    let mut losses = report.losses;
    losses.absorb(&transit_report.losses);

    Ok(Point {
        mode,
        services,
        endpoints: opts.endpoints,
        service_ports: cluster.service_ports().len() as u32,
        backend: mechanisms(&sites),
        kernel: report.kernel.clone(),
        program_ms: program_time.as_secs_f64() * 1000.0,
        transit_new_connection: transit(&transit_calls, &transit_windows.new),
        transit_established_packet: transit(&transit_calls, &transit_windows.established),
        lookup_new_connection,
        sites: report.rows,
        per_new_connection,
        per_new_connection_raw: Some(per_new_connection_raw),
        per_established_packet,
        per_established_packet_raw: Some(per_established_packet_raw),
        per_miss_packet,
        per_miss_packet_raw: Some(per_miss_packet_raw),
        traffic: TrafficCounts {
            new_connections: windows.new.packets,
            miss_packets: windows.miss.packets,
            established_packets: windows.established.packets,
            transit_new_connections: transit_windows.new.packets,
            transit_established_packets: transit_windows.established.packets,
        },
        losses,
        self_cost: report.self_cost,
    })
}

/// How a sweep ended.
#[derive(Debug)]
pub enum Outcome {
    /// Every point was measured.
    Complete(Results),
    /// `stop` completed (a signal, named here) before the last point: the
    /// results hold the points finished before it and are marked
    /// `interrupted`.
    Interrupted { results: Results, signal: &'static str },
}

/// Runs the sweep; `progress` gets one line per step. When `stop`
/// completes the point being measured is abandoned: its probes detach and
/// its namespaces go as the future is dropped (traffic already on its way
/// finishes first, on its own thread), and the results so far are saved,
/// marked interrupted. A blocking step (programming a large ruleset) is
/// not cut short: the stop takes effect when it returns.
pub async fn run(
    opts: &SweepOptions,
    stop: impl Future<Output = &'static str>,
    mut progress: impl FnMut(&str),
) -> Result<Outcome> {
    tokio::pin!(stop);
    let protocols = opts.protocols.iter().map(|p| p.as_str().to_owned()).collect();
    let mut results = Results {
        schema_version: SCHEMA_VERSION,
        tool: format!("pathcost {}", env!("CARGO_PKG_VERSION")),
        kernel: kernel_release(),
        settings: Settings {
            modes: opts.modes.clone(),
            services: opts.services.clone(),
            endpoints: opts.endpoints,
            protocols,
            connections: opts.connections,
            miss: opts.miss,
            established_flows: opts.established_flows,
            packets_per_flow: opts.packets_per_flow,
            ipvs_scheduler: opts.scheduler.as_str().to_owned(),
            backend: opts.backend.as_str().to_owned(),
            rate: opts.pace.rate,
            seed: opts.seed,
        },
        skipped: Vec::new(),
        points: Vec::new(),
        interrupted: false,
    };
    let modes: Vec<Mode> = opts
        .modes
        .iter()
        .copied()
        .filter(|&m| match m.unavailable_reason(opts.scheduler) {
            Some(reason) => {
                progress(&format!("skipping {m}: {reason}"));
                results.skipped.push(Skipped { mode: m, reason });
                false
            }
            None => true,
        })
        .collect();
    if modes.is_empty() {
        bail!("no requested mode can run on kernel {}: see the reasons above", results.kernel);
    }
    let total = modes.len() * opts.services.len();
    let mut done = 0;
    for &mode in &modes {
        for &n in &opts.services {
            done += 1;
            let step = format!("[{done}/{total}] {mode} with {n} services");
            let measured = tokio::select! {
                point = measure_point(opts, mode, n, |what| progress(&format!("{step}: {what}"))) => point,
                signal = &mut stop => {
                    progress(&format!("{step}: {signal}: stopped; probes detached, namespaces removed"));
                    results.interrupted = true;
                    if let Some(dir) = &opts.output {
                        save(&results, dir)?;
                    }
                    return Ok(Outcome::Interrupted { results, signal });
                }
            };
            let point = measured.with_context(|| format!("sweep point {mode} with {n} services"))?;
            progress(&format!(
                "{step}: done; transit p50 {} ns over {} new connections, lookup p50 {}",
                point.transit_new_connection.p50_ns,
                point.transit_new_connection.count,
                point.lookup_new_connection.as_ref().map_or("-".to_owned(), |l| format!("{} ns", l.summary.p50_ns)),
            ));
            results.points.push(point);
            if let Some(dir) = &opts.output {
                save(&results, dir)?;
            }
        }
    }
    Ok(Outcome::Complete(results))
}
