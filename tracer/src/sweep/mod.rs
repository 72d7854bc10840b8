//! `pathcost sweep`: for each kube-proxy mode and service count, build the
//! synthetic cluster in private namespaces, program it, drive real traffic
//! through it while tracing, and record cost against N. Each point's result
//! is written as soon as it exists, so a later failure loses nothing.

pub mod results;

use std::{
    net::SocketAddrV4,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use self::results::{Point, Skipped, SweepResults, SweepSettings, TrafficCounts, SCHEMA_VERSION};
use crate::{
    capabilities::kernel_release,
    collection::{calibration::Corrections, Call},
    probes::{attach::AttachRequest, Backend, SITES},
    statistics::{packets::PacketTotals, Summary},
    synthesis::{
        cluster::{Cluster, ClusterSpec, MissTarget, Protocol, SpecError, SplitMix64},
        ipvs::Scheduler,
        program::{program, Mode},
        topology::Topology,
        traffic::{self, Pace, Window},
    },
    trace::{Session, SessionOptions},
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

/// Port every synthetic service listens on (as in KUBE_PROXY_RULES.md).
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

fn mechanisms(sites: &[crate::probes::attach::SiteStatus]) -> String {
    let mut used: Vec<String> = sites.iter().filter_map(|s| s.mechanism.map(|m| m.to_string())).collect();
    used.sort();
    used.dedup();
    used.join("+")
}

/// Writes the results so far; a sweep killed later keeps what it measured.
fn save(results: &SweepResults, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let path = dir.join("results.json");
    let tmp = dir.join(".results.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(results)? + "\n")
        .with_context(|| format!("failed to write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("failed to write {}", path.display()))
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

/// One (mode, N) point: program, drive, measure, tear down.
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
    progress(&format!("programmed in {:.0} ms; attaching", program_time.as_secs_f64() * 1000.0));
    let backend = traffic::Backend::start(&topo, SERVICE_PORT)?;

    let mut session = Session::start(&SessionOptions {
        request: AttachRequest {
            sites: SITES.iter().filter(|s| s.default).collect(),
            explicit: false,
            backend: opts.backend,
            emit_events: true,
            bracket: Some(topo.bracket_filter()?),
        },
        calibrate: true,
        netns: Some(topo.node.inode()?),
        keep_calls: true,
    })?;

    progress("sending traffic");
    // Traffic runs on its own thread while the ring is drained here, so a
    // large --connections does not outgrow the ring.
    let mut rng = SplitMix64::new(opts.seed ^ 0x5eed);
    let new_targets = traffic::random_targets(cluster.service_ports(), opts.connections, &mut rng);
    let miss_ip = cluster
        .miss_address(MissTarget::UnallocatedClusterIp)
        .context("no unallocated service address for miss traffic")?;
    let miss_targets = vec![(Protocol::Udp, SocketAddrV4::new(miss_ip, SERVICE_PORT)); opts.miss as usize];
    // Established flows need a UDP service to echo.
    let udp_ports: Vec<SocketAddrV4> = cluster
        .service_ports()
        .iter()
        .filter(|p| p.protocol == Protocol::Udp)
        .map(|p| SocketAddrV4::new(p.cluster_ip, p.port))
        .collect();
    let flows: Vec<SocketAddrV4> = if udp_ports.is_empty() {
        Vec::new()
    } else {
        (0..opts.established_flows).map(|_| udp_ports[rng.below(udp_ports.len() as u64) as usize]).collect()
    };
    let (pace, packets_per_flow) = (opts.pace, opts.packets_per_flow);
    let (topo, backend, windows) = session
        .collect_during(move || {
            let windows = (|| -> Result<[Window; 3]> {
                let new = traffic::new_connections(&topo, new_targets, pace)?;
                let miss = traffic::new_connections(&topo, miss_targets, pace)?;
                let established = if flows.is_empty() {
                    Window::default()
                } else {
                    traffic::established_packets(&topo, &backend, flows, packets_per_flow, pace)?
                };
                Ok([new, miss, established])
            })();
            (topo, backend, windows)
        })
        .await?;
    let [new_window, miss_window, established_window] = windows?;

    // Let the reader catch up with the ring before detaching.
    session.collect_until(tokio::time::sleep(Duration::from_millis(300)), None, |_| {}).await?;
    let sites = session.sites().to_vec();
    let corrections = session.corrections().clone();
    let (report, calls) = session.finish()?;
    let (per_new_connection, per_new_connection_raw) = per_packet(&calls, &new_window, &corrections);
    let (per_established_packet, per_established_packet_raw) =
        per_packet(&calls, &established_window, &corrections);
    let (per_miss_packet, per_miss_packet_raw) = per_packet(&calls, &miss_window, &corrections);
    drop(backend);
    drop(topo);

    Ok(Point {
        mode,
        services,
        endpoints: opts.endpoints,
        service_ports: cluster.service_ports().len() as u32,
        backend: mechanisms(&sites),
        kernel: report.kernel.clone(),
        program_ms: program_time.as_secs_f64() * 1000.0,
        sites: report.rows,
        per_new_connection,
        per_new_connection_raw,
        per_established_packet,
        per_established_packet_raw,
        per_miss_packet,
        per_miss_packet_raw,
        traffic: TrafficCounts {
            new_connections: new_window.packets,
            miss_packets: miss_window.packets,
            established_packets: established_window.packets,
        },
        losses: report.losses,
        self_cost: report.self_cost,
    })
}

/// Runs the sweep; `progress` gets one line per step.
pub async fn run(opts: &SweepOptions, mut progress: impl FnMut(&str)) -> Result<SweepResults> {
    let protocols = opts.protocols.iter().map(|p| p.as_str()).collect();
    let mut results = SweepResults {
        schema_version: SCHEMA_VERSION,
        tool: format!("pathcost {}", env!("CARGO_PKG_VERSION")),
        kernel: kernel_release(),
        settings: SweepSettings {
            modes: opts.modes.clone(),
            services: opts.services.clone(),
            endpoints: opts.endpoints,
            protocols,
            connections: opts.connections,
            miss: opts.miss,
            established_flows: opts.established_flows,
            packets_per_flow: opts.packets_per_flow,
            ipvs_scheduler: opts.scheduler.as_str(),
            backend: opts.backend,
            rate: opts.pace.rate,
            seed: opts.seed,
        },
        skipped: Vec::new(),
        points: Vec::new(),
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
            let point = measure_point(opts, mode, n, |what| progress(&format!("{step}: {what}")))
                .await
                .with_context(|| format!("sweep point {mode} with {n} services"))?;
            progress(&format!(
                "{step}: done; new connection p50 {} ns over {} packets",
                point.per_new_connection.p50_ns, point.per_new_connection.count
            ));
            results.points.push(point);
            if let Some(dir) = &opts.output {
                save(&results, dir)?;
            }
        }
    }
    Ok(results)
}
