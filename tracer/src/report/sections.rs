//! What the table and Markdown exporters both render, each in its own
//! layout, so the two always hold the same figures: a sweep's report as
//! titled blocks of columns in reading order, and a trace's probe sites.

use crate::{
    analysis::{Analysis, Basis, CrossoverStatus, LinearFit},
    collection::Losses,
    probes::attach::SiteStatus,
    results::{Point, Results},
    statistics::Summary,
    synthesis::program::Mode,
    text::{decimal, thousands},
};

/// A titled block of columns: what table and Markdown both render.
pub struct Section {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Lines after the block.
    pub notes: Vec<String>,
}

/// The opening lines: kernel, tool, settings and skipped modes.
pub fn sweep_preamble(r: &Results) -> Vec<String> {
    let s = &r.settings;
    let services: Vec<String> = s.services.iter().map(|&n| thousands(u64::from(n))).collect();
    let mut lines = vec![
        format!("kernel {}, {}, {} points", r.kernel, r.tool, r.points.len()),
        format!(
            "settings: services {}; {} endpoints each; {}; {} new connections, {} miss, {} established flows × {} packets per point; IPVS scheduler {}; backend {}; rate {}; seed {}",
            services.join(", "),
            s.endpoints,
            s.protocols.join("+"),
            s.connections,
            s.miss,
            s.established_flows,
            s.packets_per_flow,
            s.ipvs_scheduler,
            s.backend,
            if s.rate == 0 { "unlimited".to_owned() } else { format!("{}/s", s.rate) },
            s.seed
        ),
    ];
    for k in &r.skipped {
        lines.push(format!("skipped {}: {}", k.mode, k.reason));
    }
    lines
}

/// The sections of a sweep report, in reading order.
pub fn sweep_sections(r: &Results, a: &Analysis) -> Vec<Section> {
    let mut sections = Vec::new();
    let opt = |s: Option<&Summary>| s.map_or("-".to_owned(), |s| thousands(s.p50_ns));
    let lost = |l: &Losses| {
        l.unmatched_exits + l.depth_overflows + l.orphaned_frames + l.ring_reserve_failures + l.negative_durations + l.undecodable_events
    };
    let mut points: Vec<&Point> = r.points.iter().collect();
    points.sort_by_key(|p| (Mode::ALL.iter().position(|m| *m == p.mode), p.services));
    if a.basis == Basis::Transit {
        sections.push(Section {
            title: "per point: transit through the node (tracepoints only, the same span in every mode) and the lookup (ns)".into(),
            header: [
                "mode", "services", "new conns", "transit p50", "transit p90", "transit p99", "established transit p50",
                "lookup", "lookup p50", "lookup p90", "lookup p99",
            ]
            .map(String::from)
            .to_vec(),
            rows: points
                .iter()
                .map(|p| {
                    let t = &p.transit_new_connection;
                    let l = p.lookup_new_connection.as_ref();
                    let lookup = |f: fn(&Summary) -> u64| l.map_or("-".to_owned(), |l| thousands(f(&l.summary)));
                    vec![
                        p.mode.to_string(),
                        thousands(u64::from(p.services)),
                        thousands(t.count),
                        thousands(t.p50_ns),
                        thousands(t.p90_ns),
                        thousands(t.p99_ns),
                        thousands(p.transit_established_packet.p50_ns),
                        l.map_or("- (the bracket cannot isolate it)".to_owned(), |l| format!("{} ({})", l.what, l.mechanism)),
                        lookup(|s| s.p50_ns),
                        lookup(|s| s.p90_ns),
                        lookup(|s| s.p99_ns),
                    ]
                })
                .collect(),
            notes: vec![
                "transit: net:netif_receive_skb on the client-facing device to net:net_dev_start_xmit of the same skb on the backend-facing device, in a phase with nothing else attached".into(),
                "lookup: the call that finds the service, raw, from the probed phase; IPVS's excludes the transmit (ip_vs_nat_xmit) it runs inside its hook".into(),
            ],
        });
    }
    sections.push(Section {
        title: "netfilter hook time per packet (nf_hook_slow union, corrected for the probes' own cost, or the PREROUTING bracket with --backend bracket; raw = as measured; IPVS includes the forwarding it does inside its hook, so compare modes by transit)".into(),
        header: [
            "mode", "services", "backend", "new conns", "new p50", "new p90", "new p99", "new max", "raw p50",
            "established p50", "miss p50", "programming ms", "lost events",
        ]
        .map(String::from)
        .to_vec(),
        rows: points
            .iter()
            .map(|p| {
                let n = &p.per_new_connection;
                vec![
                    p.mode.to_string(),
                    thousands(u64::from(p.services)),
                    p.backend.clone(),
                    thousands(n.count),
                    thousands(n.p50_ns),
                    thousands(n.p90_ns),
                    thousands(n.p99_ns),
                    thousands(n.max_ns),
                    opt(p.per_new_connection_raw.as_ref()),
                    thousands(p.per_established_packet.p50_ns),
                    thousands(p.per_miss_packet.p50_ns),
                    decimal(p.program_ms),
                    thousands(lost(&p.losses)),
                ]
            })
            .collect(),
        notes: Vec::new(),
    });

    let ports = a.modes.first().map_or(1.0, |m| m.ports_per_service);
    let slope = |f: &Option<LinearFit>| f.as_ref().map_or("-".to_owned(), |f| decimal(f.slope));
    sections.push(Section {
        title: format!(
            "cost against N (least squares; N = services, {ports} service ports each, so per service port = per service / {ports}); new = {}",
            a.basis.describe()
        ),
        header: [
            "mode", "points", "new p50 ns/service", "intercept ns", "R²", "new p99 ns/service",
            "lookup ns/service", "netfilter hooks ns/service", "established ns/service", "miss ns/service",
            "programming ms/1,000 services",
        ]
        .map(String::from)
        .to_vec(),
        rows: a
            .modes
            .iter()
            .map(|m| {
                let f = m.new_connection_p50.as_ref();
                vec![
                    m.mode.to_string(),
                    f.map_or(m.services.len(), |f| f.points).to_string(),
                    slope(&m.new_connection_p50),
                    f.map_or("-".into(), |f| decimal(f.intercept)),
                    f.map_or("-".into(), |f| format!("{:.3}", f.r_squared)),
                    slope(&m.new_connection_p99),
                    slope(&m.lookup_p50),
                    slope(&m.netfilter_new_connection_p50),
                    slope(&m.established_packet_p50),
                    slope(&m.miss_packet_p50),
                    m.control_plane_ms.as_ref().map_or("-".into(), |f| decimal(f.slope * 1000.0)),
                ]
            })
            .collect(),
        notes: if a.modes.iter().any(|m| m.new_connection_p50.as_ref().is_some_and(|f| f.slope < 0.0)) {
            vec!["a negative slope is noise (more rules never make a lookup cheaper): crossings below treat that mode as flat at its mean".into()]
        } else {
            Vec::new()
        },
    });

    sections.push(Section {
        title: format!("where modes cross (p50 {})", a.basis.describe()),
        header: ["modes", "crossing", "cheaper below", "cheaper above"].map(String::from).to_vec(),
        rows: a
            .crossovers
            .iter()
            .map(|c| {
                let crossing = match (c.status, c.services) {
                    (CrossoverStatus::InRange, Some(n)) => format!("{} services", thousands(n.round() as u64)),
                    (CrossoverStatus::NearRange, Some(n)) => {
                        format!("{} services (extrapolated)", thousands(n.round() as u64))
                    }
                    _ => "no crossover in range".into(),
                };
                vec![
                    format!("{} / {}", c.modes[0], c.modes[1]),
                    if c.tentative { format!("{crossing}, tentative") } else { crossing },
                    c.cheaper_below.to_string(),
                    c.cheaper_above.to_string(),
                ]
            })
            .collect(),
        notes: if a.crossovers.iter().any(|c| c.tentative) {
            vec!["tentative: a mode has fewer than 3 service counts, the slopes are within noise of each other, or the two costs are within 10 % of each other at an end of the measured range".into()]
        } else {
            Vec::new()
        },
    });

    for s in &a.ipvs_schedulers {
        sections.push(Section {
            title: format!("IPVS scheduler {} (ip_vs_schedule per call, corrected)", s.scheduler),
            header: ["services", "calls", "p50 ns"].map(String::from).to_vec(),
            rows: s
                .points
                .iter()
                .map(|p| vec![thousands(u64::from(p.services)), thousands(p.calls), thousands(p.p50_ns)])
                .collect(),
            notes: vec![match &s.p50_fit {
                Some(f) => format!(
                    "{} ns per service, R² {:.3}; one scheduler per sweep: compare others with `pathcost sweep --modes ipvs --ipvs-scheduler NAME` and report each file",
                    decimal(f.slope),
                    f.r_squared
                ),
                None => "one scheduler per sweep: compare others with `pathcost sweep --modes ipvs --ipvs-scheduler NAME` and report each file".into(),
            }],
        });
    }

    sections.push(Section {
        title: "probe self-cost (ns per entry/exit pair, calibrated at every point; the corrected figures have it removed)".into(),
        header: ["mechanism", "target", "points", "pair median", "pair min", "pair max", "inside span median"]
            .map(String::from)
            .to_vec(),
        rows: a
            .self_cost
            .iter()
            .map(|c| {
                vec![
                    c.mechanism.clone(),
                    c.target.clone(),
                    c.points.to_string(),
                    thousands(c.pair_ns_median.round() as u64),
                    thousands(c.pair_ns_min.round() as u64),
                    thousands(c.pair_ns_max.round() as u64),
                    thousands(c.span_ns_median.round() as u64),
                ]
            })
            .collect(),
        notes: Vec::new(),
    });

    // Every counter the collector reports; bracket bookkeeping only where
    // the bracket backend ran.
    let counters: Vec<(String, u64)> = crate::analysis::loss_counters(&a.losses)
        .into_iter()
        // The tracepoint spans' counters only where they ran.
        .filter(|(name, n)| *n > 0 || !(name.starts_with("brackets_") || name.starts_with("transits_")))
        .collect();
    let header: Vec<String> = counters.iter().map(|(name, _)| name.replace('_', " ")).collect();
    let row: Vec<String> = counters.iter().map(|(_, n)| thousands(*n)).collect();
    sections.push(Section { title: "losses, all points".into(), header, rows: vec![row], notes: Vec::new() });
    sections
}

/// The columns of a trace's probe-site list.
pub const SITE_HEADER: [&str; 5] = ["site", "symbol", "module", "mechanism", "notes"];

/// A probe site as [`SITE_HEADER`] lists it: where it resolved and which
/// mechanism attached, or why none did.
pub fn site_row(s: &SiteStatus) -> Vec<String> {
    vec![
        s.site.to_owned(),
        s.symbol.clone().unwrap_or_else(|| "-".into()),
        s.module.clone().unwrap_or_else(|| "vmlinux".into()),
        s.mechanism.map_or("not attached".into(), |m| m.to_string()),
        s.notes.join("; "),
    ]
}
