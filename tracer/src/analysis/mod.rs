//! What a sweep's numbers say: per mode a least-squares line of cost
//! against the number of services, where modes cross, the IPVS scheduler's
//! own cost, the control-plane cost, the probes' self-cost and every loss
//! counter, plus warnings that tell the user what to do about a doubtful
//! number. Exporters ([`crate::report`]) and `pathcost advise`
//! ([`advise`]) render it; nothing here formats for a terminal.
//!
//! Modes are compared by one figure, the [`Basis`]: the transit of a new
//! connection through the node (the same span in every mode, measured
//! with nothing else attached), or, for results files older than the
//! transit, the netfilter hook time per packet, which says so. The lookup
//! each mode does, and the netfilter hook time, are fitted beside it.
//!
//! N in every fit is `services` (ClusterIP services). Each service has one
//! port per protocol (`service_ports` = services × protocols), so a slope
//! per service port is the slope per service divided by the number of
//! protocols, which the report states.

pub mod advise;
pub mod fit;

use serde::Serialize;

pub use fit::LinearFit;

use crate::{
    collection::Losses,
    results::{Point, Results},
    statistics::Summary,
    synthesis::program::Mode,
    text::{significant, thousands},
};

/// A probe pair dearer than this is far above what fentry or kprobes cost
/// on real hardware (tens to a few hundred ns): the machine is emulated
/// (qemu TCG) or saturated.
pub const EMULATION_PAIR_NS: f64 = 500.0;
/// p99 above this many times p50 means the tail is noise, not lookup cost.
pub const HIGH_VARIANCE_RATIO: f64 = 10.0;
/// Fewer samples than this make a p99 rest on a handful of packets.
pub const FEW_SAMPLES: u64 = 100;
/// A fit on fewer distinct N cannot show whether cost is a line at all.
pub const MIN_FIT_POINTS: usize = 3;
/// Two costs closer than this share of the smaller one are treated as
/// equal: repeated sweeps on one machine move by about that much.
pub const NOISE_SHARE: f64 = 0.10;

/// The per-new-connection figure that modes are compared by: the fits
/// called `new_connection_*`, the crossovers, the advice and the plot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Basis {
    /// `transit_new_connection`: arrival on the node's client-facing device
    /// to departure on its backend-facing device, tracepoints only.
    Transit,
    /// `per_new_connection`, the union of a packet's `nf_hook_slow` calls:
    /// only in results files from before the transit (schema version 1).
    /// Not like for like: IPVS forwards from inside its LOCAL_IN hook, so
    /// its figure includes forwarding the other modes do between hooks.
    NetfilterHooks,
}

impl Basis {
    /// Transit wherever a point measured it.
    pub fn of(points: &[Point]) -> Basis {
        if points.iter().any(|p| p.transit_new_connection.count > 0) {
            Basis::Transit
        } else {
            Basis::NetfilterHooks
        }
    }

    /// The figure of one point.
    pub fn figure(self, p: &Point) -> &Summary {
        match self {
            Basis::Transit => &p.transit_new_connection,
            Basis::NetfilterHooks => &p.per_new_connection,
        }
    }

    /// Its name in a few words, for axis labels.
    pub fn short(self) -> &'static str {
        match self {
            Basis::Transit => "transit",
            Basis::NetfilterHooks => "netfilter hook time",
        }
    }

    /// What the figure is, for titles.
    pub fn describe(self) -> &'static str {
        match self {
            Basis::Transit => "transit per new connection (client-facing device to backend-facing device, tracepoints only)",
            Basis::NetfilterHooks => {
                "netfilter hook time per new connection (nf_hook_slow union; an older results file without transit: not like for like, IPVS includes its forwarding)"
            }
        }
    }
}

/// Everything the analysis found, in base units (ns, ms).
#[derive(Clone, Debug, Serialize)]
pub struct Analysis {
    /// What N is in every fit.
    pub fit_variable: &'static str,
    /// The figure `new_connection_*` fits and the crossovers compare.
    pub basis: Basis,
    pub modes: Vec<ModeAnalysis>,
    /// Where the per-new-connection p50 lines of two modes cross.
    pub crossovers: Vec<Crossover>,
    /// The cost of `ip_vs_schedule` per scheduler measured.
    pub ipvs_schedulers: Vec<SchedulerCost>,
    /// The probes' own cost per mechanism, over all points.
    pub self_cost: Vec<SelfCostRange>,
    /// Every loss counter summed over all points.
    pub losses: Losses,
    /// A heuristic (see [`EMULATION_PAIR_NS`]): absolute ns are then
    /// inflated and only ratios between modes and N carry over.
    pub emulation_suspected: bool,
    pub warnings: Vec<Warning>,
}

/// One mode's lines against N.
#[derive(Clone, Debug, Serialize)]
pub struct ModeAnalysis {
    pub mode: Mode,
    /// Service counts measured, ascending.
    pub services: Vec<u32>,
    /// Service ports per service (the protocols each service exposes).
    pub ports_per_service: f64,
    /// Mechanisms behind the numbers, as the points name them.
    pub backend: String,
    /// ns per new connection of the [`Basis`] (p50) against N.
    pub new_connection_p50: Option<LinearFit>,
    /// The same at p99.
    pub new_connection_p99: Option<LinearFit>,
    /// ns per packet of an established flow through the node (transit p50).
    pub transit_established_p50: Option<LinearFit>,
    /// The call that finds the service (named by `lookup_what`), p50 raw.
    pub lookup_p50: Option<LinearFit>,
    pub lookup_what: Option<String>,
    /// The netfilter hook time per new connection (nf_hook_slow union,
    /// corrected for the probes' own cost), secondary: see [`Basis`].
    pub netfilter_new_connection_p50: Option<LinearFit>,
    /// ns per packet of an established flow (p50, corrected) against N.
    pub established_packet_p50: Option<LinearFit>,
    /// ns per packet to an address no service owns (p50, corrected).
    pub miss_packet_p50: Option<LinearFit>,
    /// ms to program all rules against N (control-plane cost).
    pub control_plane_ms: Option<LinearFit>,
}

/// Where two modes' lines cross, or why they do not.
#[derive(Clone, Debug, Serialize)]
pub struct Crossover {
    pub modes: [Mode; 2],
    pub status: CrossoverStatus,
    /// N at the crossing, when there is one in or near the measured range.
    pub services: Option<f64>,
    /// The cheaper mode below the crossing (or over the whole range).
    pub cheaper_below: Mode,
    /// The cheaper mode above the crossing (equal to `cheaper_below` when
    /// they do not cross).
    pub cheaper_above: Mode,
    /// Less than three N for either mode, slopes within noise of each
    /// other, or the two costs within noise at an end of the measured
    /// range: the crossing may move or vanish with more points.
    pub tentative: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrossoverStatus {
    /// Between the smallest and largest N both modes measured.
    InRange,
    /// Outside that range by at most a factor of two: an extrapolation.
    NearRange,
    /// Parallel, or crossing far from anything measured.
    NoneInRange,
}

/// The IPVS scheduler's own call (`ip_vs_schedule`) at each N.
#[derive(Clone, Debug, Serialize)]
pub struct SchedulerCost {
    pub scheduler: String,
    /// (services, calls, p50 ns corrected) per measured N.
    pub points: Vec<SchedulerPoint>,
    pub p50_fit: Option<LinearFit>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SchedulerPoint {
    pub services: u32,
    pub calls: u64,
    pub p50_ns: u64,
}

/// One mechanism's calibrated cost across the sweep's points.
#[derive(Clone, Debug, Serialize)]
pub struct SelfCostRange {
    pub mechanism: String,
    pub target: String,
    pub points: usize,
    pub pair_ns_min: f64,
    pub pair_ns_median: f64,
    pub pair_ns_max: f64,
    pub span_ns_median: f64,
}

/// Something that makes a number doubtful, and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub kind: WarningKind,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WarningKind {
    NoPoints,
    Interrupted,
    SkippedMode,
    TooFewPoints,
    NoSamples,
    FewSamples,
    HighVariance,
    Losses,
    Emulation,
    CoarseBackend,
    MixedBackends,
    FallingCost,
}

impl Warning {
    fn new(kind: WarningKind, message: String) -> Warning {
        Warning { kind, message }
    }
}

/// "nftables at 1,000 services"
pub fn point_name(p: &Point) -> String {
    format!("{} at {} services", p.mode, thousands(u64::from(p.services)))
}

/// Fits `value` of every point that measured something (`count > 0`)
/// against its N.
fn fit_by<'a>(points: &[&'a Point], value: impl Fn(&'a Point) -> Option<f64>) -> Option<LinearFit> {
    let pairs: Vec<(f64, f64)> =
        points.iter().filter_map(|p| value(p).map(|v| (f64::from(p.services), v))).collect();
    LinearFit::of(&pairs)
}

fn measured(s: &Summary) -> Option<f64> {
    (s.count > 0).then_some(s.p50_ns as f64)
}

pub fn analyze(r: &Results) -> Analysis {
    let mut warnings = Vec::new();
    if r.points.is_empty() {
        warnings.push(Warning::new(
            WarningKind::NoPoints,
            "the results hold no points: nothing was measured (every mode skipped, or the sweep stopped before its first point)".into(),
        ));
    }
    if r.interrupted {
        warnings.push(Warning::new(
            WarningKind::Interrupted,
            format!(
                "the sweep was interrupted after {} points: settings ask for more, so fits and crossovers may rest on fewer points (run it again to complete it)",
                r.points.len()
            ),
        ));
    }
    for s in &r.skipped {
        warnings.push(Warning::new(WarningKind::SkippedMode, format!("{} was not measured: {}", s.mode, s.reason)));
    }

    let basis = Basis::of(&r.points);
    let modes: Vec<ModeAnalysis> =
        r.modes().into_iter().map(|m| mode_analysis(m, &r.points_of(m), basis, &mut warnings)).collect();
    let crossovers = crossovers(&modes);

    for p in &r.points {
        point_warnings(p, basis, &mut warnings);
    }
    let losses = total_losses(&r.points);
    loss_warnings(&r.points, &mut warnings);

    let self_cost = self_cost_ranges(&r.points);
    let dearest = r
        .points
        .iter()
        .flat_map(|p| &p.self_cost)
        .max_by(|a, b| a.pair_ns.total_cmp(&b.pair_ns));
    let emulation_suspected = dearest.is_some_and(|c| c.pair_ns > EMULATION_PAIR_NS);
    if let Some(c) = dearest.filter(|_| emulation_suspected) {
        warnings.push(Warning::new(
            WarningKind::Emulation,
            format!(
                "a probe pair costs up to {} ns ({} on {}): this looks like an emulated (qemu TCG) or heavily loaded machine; compare ratios between modes and N, not absolute ns",
                thousands(c.pair_ns.round() as u64),
                c.mechanism,
                c.target
            ),
        ));
    }
    let bracketed = r.points.iter().filter(|p| p.backend.contains("bracket")).count();
    if bracketed > 0 {
        warnings.push(Warning::new(
            WarningKind::CoarseBackend,
            format!(
                "{bracketed} of {} points were timed by the coarser tracepoint bracket (netif_receive_skb to fib_table_lookup: all of PREROUTING, not the lookup functions alone); compare those points with each other, not with kprobe or fentry figures",
                r.points.len()
            ),
        ));
    }

    Analysis {
        fit_variable: "services",
        basis,
        modes,
        crossovers,
        ipvs_schedulers: scheduler_costs(r),
        self_cost,
        losses,
        emulation_suspected,
        warnings,
    }
}

fn mode_analysis(mode: Mode, points: &[&Point], basis: Basis, warnings: &mut Vec<Warning>) -> ModeAnalysis {
    let mut services: Vec<u32> = points.iter().map(|p| p.services).collect();
    services.dedup();
    let mut backends: Vec<&str> = points.iter().map(|p| p.backend.as_str()).collect();
    backends.sort_unstable();
    backends.dedup();
    if backends.len() > 1 {
        warnings.push(Warning::new(
            WarningKind::MixedBackends,
            format!(
                "{mode} was timed by different mechanisms at different N ({}): its slope mixes their overheads; rerun with one --backend",
                backends.join(", ")
            ),
        ));
    }
    let measured_n: Vec<u32> = {
        let mut n: Vec<u32> = points.iter().filter(|p| basis.figure(p).count > 0).map(|p| p.services).collect();
        n.dedup();
        n
    };
    if measured_n.len() < MIN_FIT_POINTS {
        let list: Vec<String> = measured_n.iter().map(|&n| thousands(u64::from(n))).collect();
        warnings.push(Warning::new(
            WarningKind::TooFewPoints,
            format!(
                "{mode}: too few points for a fit ({} service count{} measured{}); its slope and crossings are tentative: sweep at least {MIN_FIT_POINTS}, e.g. --services 10,100,1000,10000",
                measured_n.len(),
                if measured_n.len() == 1 { "" } else { "s" },
                if list.is_empty() { String::new() } else { format!(": {}", list.join(", ")) },
            ),
        ));
    }
    let new_connection_p50 = fit_by(points, |p| measured(basis.figure(p)));
    if let Some(f) = new_connection_p50.as_ref().filter(|f| f.slope < 0.0) {
        warnings.push(Warning::new(
            WarningKind::FallingCost,
            format!(
                "{mode}: cost per new connection falls with N ({} ns per service): more rules never make a lookup cheaper, so this is noise; predictions and crossings treat {mode} as flat at its mean",
                significant(f.slope)
            ),
        ));
    }
    let ports_per_service = points
        .iter()
        .find(|p| p.services > 0)
        .map_or(1.0, |p| f64::from(p.service_ports) / f64::from(p.services));
    ModeAnalysis {
        mode,
        services,
        ports_per_service,
        backend: backends.join(", "),
        new_connection_p50,
        new_connection_p99: fit_by(points, |p| {
            let s = basis.figure(p);
            (s.count > 0).then_some(s.p99_ns as f64)
        }),
        transit_established_p50: fit_by(points, |p| measured(&p.transit_established_packet)),
        lookup_p50: fit_by(points, |p| p.lookup_new_connection.as_ref().and_then(|l| measured(&l.summary))),
        lookup_what: points.iter().find_map(|p| p.lookup_new_connection.as_ref().map(|l| format!("{} ({})", l.what, l.mechanism))),
        netfilter_new_connection_p50: fit_by(points, |p| measured(&p.per_new_connection)),
        established_packet_p50: fit_by(points, |p| measured(&p.per_established_packet)),
        miss_packet_p50: fit_by(points, |p| measured(&p.per_miss_packet)),
        control_plane_ms: fit_by(points, |p| Some(p.program_ms)),
    }
}

fn crossovers(modes: &[ModeAnalysis]) -> Vec<Crossover> {
    let mut out = Vec::new();
    for (i, a) in modes.iter().enumerate() {
        for b in &modes[i + 1..] {
            let (Some(fa), Some(fb)) = (&a.new_connection_p50, &b.new_connection_p50) else { continue };
            out.push(crossover(a.mode, &fa.non_decreasing(), b.mode, &fb.non_decreasing()));
        }
    }
    out
}

fn crossover(ma: Mode, fa: &LinearFit, mb: Mode, fb: &LinearFit) -> Crossover {
    // The range both modes measured; with none in common, all they measured.
    let (mut lo, mut hi) = (fa.n_min.max(fb.n_min), fa.n_max.min(fb.n_max));
    if lo > hi {
        (lo, hi) = (fa.n_min.min(fb.n_min), fa.n_max.max(fb.n_max));
    }
    let cheaper_at = |n: f64| if fa.predict(n) <= fb.predict(n) { ma } else { mb };
    let slopes_apart = match (fa.slope_stderr, fb.slope_stderr) {
        (Some(sa), Some(sb)) => (fa.slope - fb.slope).abs() > 2.0 * (sa * sa + sb * sb).sqrt(),
        _ => false,
    };
    // The order of the two modes must be clear at both ends of the range
    // for a crossing between them to be more than noise.
    let apart_at = |n: f64| {
        let (a, b) = (fa.predict(n), fb.predict(n));
        (a - b).abs() > NOISE_SHARE * a.abs().min(b.abs())
    };
    let tentative = fa.points < MIN_FIT_POINTS
        || fb.points < MIN_FIT_POINTS
        || !slopes_apart
        || !apart_at(lo)
        || !apart_at(hi);
    let at = fit::intersection(fa, fb).filter(|n| n.is_finite() && *n > 0.0);
    let status = match at {
        Some(n) if (lo..=hi).contains(&n) => CrossoverStatus::InRange,
        Some(n) if (lo / 2.0..=hi * 2.0).contains(&n) => CrossoverStatus::NearRange,
        _ => CrossoverStatus::NoneInRange,
    };
    match (status, at) {
        (CrossoverStatus::NoneInRange, _) | (_, None) => {
            let cheaper = cheaper_at((lo + hi) / 2.0);
            Crossover {
                modes: [ma, mb],
                status: CrossoverStatus::NoneInRange,
                services: None,
                cheaper_below: cheaper,
                cheaper_above: cheaper,
                tentative: fa.points < MIN_FIT_POINTS || fb.points < MIN_FIT_POINTS,
            }
        }
        (status, Some(n)) => {
            // Below the crossing the line with the larger slope is lower.
            let (below, above) = if fa.slope > fb.slope { (ma, mb) } else { (mb, ma) };
            Crossover { modes: [ma, mb], status, services: Some(n), cheaper_below: below, cheaper_above: above, tentative }
        }
    }
}

fn point_warnings(p: &Point, basis: Basis, warnings: &mut Vec<Warning>) {
    let s = basis.figure(p);
    if s.count == 0 {
        warnings.push(Warning::new(
            WarningKind::NoSamples,
            format!(
                "{}: no new connection was measured (the probes saw none of the traffic), so the point is left out of the fits; check `pathcost selftest`",
                point_name(p)
            ),
        ));
        return;
    }
    if s.count < FEW_SAMPLES {
        warnings.push(Warning::new(
            WarningKind::FewSamples,
            format!(
                "{}: only {} new connections measured, so p99 rests on a handful of packets; raise --connections",
                point_name(p),
                s.count
            ),
        ));
    }
    if s.p50_ns > 0 && s.p99_ns as f64 / s.p50_ns as f64 > HIGH_VARIANCE_RATIO {
        warnings.push(Warning::new(
            WarningKind::HighVariance,
            format!(
                "{}: per-new-connection p99 is {:.1}× p50 ({} ns against {} ns), high variance: quiet the machine, raise --connections, or compare p50 only",
                point_name(p),
                s.p99_ns as f64 / s.p50_ns as f64,
                thousands(s.p99_ns),
                thousands(s.p50_ns)
            ),
        ));
    }
}

/// The order counters are shown in; others follow by name.
const COUNTER_ORDER: [&str; 15] = [
    "entries",
    "matched",
    "unmatched_exits",
    "depth_overflows",
    "orphaned_frames",
    "ring_reserve_failures",
    "negative_durations",
    "undecodable_events",
    "bpf_recursion_misses",
    "brackets_opened",
    "brackets_closed",
    "brackets_unclosed",
    "transits_opened",
    "transits_closed",
    "transits_unclosed",
];

/// Every counter of a `Losses` by name, read through its serialised form
/// so that counters added to the collector are summed and shown without a
/// change here.
pub fn loss_counters(l: &Losses) -> Vec<(String, u64)> {
    let mut counters: Vec<(String, u64)> = match serde_json::to_value(l) {
        Ok(serde_json::Value::Object(map)) => map.into_iter().filter_map(|(k, v)| Some((k, v.as_u64()?))).collect(),
        _ => Vec::new(),
    };
    counters.sort_by_key(|(k, _)| (COUNTER_ORDER.iter().position(|o| o == k).unwrap_or(COUNTER_ORDER.len()), k.clone()));
    counters
}

/// Counters that count work done rather than events lost.
pub const BOOKKEEPING_COUNTERS: [&str; 6] =
    ["entries", "matched", "brackets_opened", "brackets_closed", "transits_opened", "transits_closed"];

fn total_losses(points: &[Point]) -> Losses {
    // `absorb` names every field, so a counter added to the collector is
    // summed here without a change.
    points.iter().fold(Losses::default(), |mut sum, p| {
        sum.absorb(&p.losses);
        sum
    })
}

/// "1 event", "12 events".
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", thousands(n), if n == 1 { one } else { many })
}

/// Reads one loss counter.
type LossCounter = fn(&Losses) -> u64;
/// What a loss message says, given the count and where it happened.
type LossMessage = fn(u64, &str) -> String;

/// The loss counters, each with what it means and what to do about it.
pub const LOSS_COUNTERS: [(&str, LossCounter, LossMessage); 9] = [
    ("ring_reserve_failures", |l| l.ring_reserve_failures, |n, at| {
        format!(
            "the ring buffer dropped {} ({at}); those calls are missing from the percentiles: lower --connections or --rate",
            count(n, "event", "events")
        )
    }),
    ("unmatched_exits", |l| l.unmatched_exits, |n, at| {
        format!(
            "{} found no entry ({at}); those calls are missing from the figures: lower --rate, or prefer --backend fentry where the kernel allows it",
            count(n, "probe exit", "probe exits")
        )
    }),
    ("orphaned_frames", |l| l.orphaned_frames, |n, at| {
        format!(
            "{} never saw an exit ({at}; kretprobe misses under load?); those calls are missing from the figures: lower --rate",
            count(n, "probe entry", "probe entries")
        )
    }),
    ("depth_overflows", |l| l.depth_overflows, |n, at| {
        format!(
            "{} nested deeper than the probe stack and went untimed ({at}): report it with the kernel version",
            count(n, "call", "calls")
        )
    }),
    ("negative_durations", |l| l.negative_durations, |n, at| {
        format!(
            "{} ended before it began by the clock and went uncounted ({at}): the clock is unreliable on this machine (emulated?)",
            count(n, "call", "calls")
        )
    }),
    ("undecodable_events", |l| l.undecodable_events, |n, at| {
        format!(
            "{} named a probe site this pathcost does not know ({at}): the eBPF object and the binary do not match; rebuild pathcost",
            count(n, "event", "events")
        )
    }),
    ("bpf_recursion_misses", |l| l.bpf_recursion_misses, |n, at| {
        format!(
            "the kernel skipped pathcost's probes {} because another BPF program was running on that CPU ({at}); those calls are missing: stop other tracing tools while measuring",
            count(n, "time", "times")
        )
    }),
    ("brackets_unclosed", |l| l.brackets_unclosed, |n, at| {
        format!(
            "{} never reached a route lookup ({at}): dropped or consumed before routing, so not in the figures; many of them mean the bracket missed traffic (check --device)",
            count(n, "tracepoint bracket", "tracepoint brackets")
        )
    }),
    ("transits_unclosed", |l| l.transits_unclosed, |n, at| {
        format!(
            "{} arrived but never left towards the backend ({at}): not forwarded (dropped, or delivered locally), so not in the transit figures",
            count(n, "packet", "packets")
        )
    }),
];

fn loss_warnings(points: &[Point], warnings: &mut Vec<Warning>) {
    for (_, counter, message) in LOSS_COUNTERS {
        let hit: Vec<&Point> = points.iter().filter(|p| counter(&p.losses) > 0).collect();
        if hit.is_empty() {
            continue;
        }
        let n: u64 = hit.iter().map(|p| counter(&p.losses)).sum();
        let mut place: Vec<String> = hit.iter().take(3).map(|p| point_name(p)).collect();
        if hit.len() > 3 {
            place.push(format!("{} more points", hit.len() - 3));
        }
        warnings.push(Warning::new(WarningKind::Losses, message(n, &place.join(", "))));
    }
    // Counters this analysis has no advice for yet still get named.
    let known = |name: &str| BOOKKEEPING_COUNTERS.contains(&name) || LOSS_COUNTERS.iter().any(|(k, _, _)| *k == name);
    let mut names: Vec<String> = Vec::new();
    for p in points {
        for (name, n) in loss_counters(&p.losses) {
            if n > 0 && !known(&name) && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    for name in names {
        let counted = |p: &Point| loss_counters(&p.losses).into_iter().find(|(k, _)| *k == name).map_or(0, |(_, n)| n);
        let hit: Vec<&Point> = points.iter().filter(|p| counted(p) > 0).collect();
        let n: u64 = hit.iter().map(|p| counted(p)).sum();
        let place: Vec<String> = hit.iter().take(3).map(|p| point_name(p)).collect();
        warnings.push(Warning::new(
            WarningKind::Losses,
            format!("{} {} ({}): events the figures may be missing", thousands(n), name.replace('_', " "), place.join(", ")),
        ));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn self_cost_ranges(points: &[Point]) -> Vec<SelfCostRange> {
    let mut keys: Vec<(String, String)> = Vec::new();
    for c in points.iter().flat_map(|p| &p.self_cost) {
        let key = (c.mechanism.clone(), c.target.clone());
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys.into_iter()
        .map(|(mechanism, target)| {
            let costs: Vec<_> = points
                .iter()
                .flat_map(|p| &p.self_cost)
                .filter(|c| c.mechanism == mechanism && c.target == target)
                .collect();
            let pair: Vec<f64> = costs.iter().map(|c| c.pair_ns).collect();
            SelfCostRange {
                points: costs.len(),
                pair_ns_min: pair.iter().copied().fold(f64::INFINITY, f64::min),
                pair_ns_max: pair.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                pair_ns_median: median(pair),
                span_ns_median: median(costs.iter().map(|c| c.span_ns).collect()),
                mechanism,
                target,
            }
        })
        .collect()
}

/// `ip_vs_schedule` per IPVS point. A results file holds one scheduler
/// (`settings.ipvs_scheduler`); schedulers are compared across files.
fn scheduler_costs(r: &Results) -> Vec<SchedulerCost> {
    let points: Vec<SchedulerPoint> = r
        .points_of(Mode::Ipvs)
        .into_iter()
        .filter_map(|p| {
            let rows: Vec<_> = p.sites.iter().filter(|s| s.site == "ip_vs_schedule").collect();
            let main = rows.iter().max_by_key(|s| s.inclusive.count)?;
            Some(SchedulerPoint {
                services: p.services,
                calls: rows.iter().map(|s| s.inclusive.count).sum(),
                p50_ns: main.inclusive_corrected.p50_ns,
            })
        })
        .collect();
    if points.is_empty() {
        return Vec::new();
    }
    let pairs: Vec<(f64, f64)> =
        points.iter().filter(|p| p.calls > 0).map(|p| (f64::from(p.services), p.p50_ns as f64)).collect();
    vec![SchedulerCost { scheduler: r.settings.ipvs_scheduler.clone(), p50_fit: LinearFit::of(&pairs), points }]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn fixture(name: &str) -> Results {
        Results::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)).unwrap()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6 * (1.0 + b.abs())
    }

    #[test]
    fn fits_match_the_hand_built_fixture() {
        let a = analyze(&fixture("small.json"));
        let by_mode = |m| a.modes.iter().find(|x| x.mode == m).unwrap();
        // iptables-legacy was built as 100 + 1·N ns and 1 + 0.5·N ms.
        let legacy = by_mode(Mode::IptablesLegacy);
        let f = legacy.new_connection_p50.as_ref().unwrap();
        assert!(close(f.slope, 1.0) && close(f.intercept, 100.0) && close(f.r_squared, 1.0), "{f:?}");
        assert_eq!(f.points, 3);
        let c = legacy.control_plane_ms.as_ref().unwrap();
        assert!(close(c.slope, 0.5) && close(c.intercept, 1.0), "{c:?}");
        assert_eq!(legacy.ports_per_service, 2.0);
        // nftables: flat 500 ns.
        let f = by_mode(Mode::Nftables).new_connection_p50.clone().unwrap();
        assert!(close(f.slope, 0.0) && close(f.intercept, 500.0), "{f:?}");
        // ipvs: two points, 700 and 701 ns at 10 and 1000.
        let f = by_mode(Mode::Ipvs).new_connection_p50.clone().unwrap();
        assert!(close(f.slope, 1.0 / 990.0) && f.points == 2 && f.slope_stderr.is_none(), "{f:?}");
    }

    #[test]
    fn crossovers_match_the_hand_built_fixture() {
        let a = analyze(&fixture("small.json"));
        let find = |x: Mode, y: Mode| a.crossovers.iter().find(|c| c.modes.contains(&x) && c.modes.contains(&y)).unwrap();
        // 100 + N = 500 at N = 400, inside 10..1000; legacy cheaper below.
        let c = find(Mode::IptablesLegacy, Mode::Nftables);
        assert_eq!(c.status, CrossoverStatus::InRange);
        assert!(close(c.services.unwrap(), 400.0));
        assert_eq!((c.cheaper_below, c.cheaper_above), (Mode::IptablesLegacy, Mode::Nftables));
        assert!(!c.tentative, "{c:?}");
        // ipvs's line through (10, 700) and (1000, 701) is 700 − 10/990 + N/990;
        // it meets 100 + N at N = (600 − 10/990)·990/989 = 593,990/989.
        // Tentative: ipvs has two points.
        let c = find(Mode::IptablesLegacy, Mode::Ipvs);
        assert!(close(c.services.unwrap(), 593_990.0 / 989.0), "{c:?}");
        assert!(c.tentative);
        // nftables is below ipvs everywhere.
        let c = find(Mode::Nftables, Mode::Ipvs);
        assert_eq!(c.status, CrossoverStatus::NoneInRange);
        assert_eq!((c.cheaper_below, c.cheaper_above), (Mode::Nftables, Mode::Nftables));
    }

    #[test]
    fn warnings_say_what_to_do() {
        let a = analyze(&fixture("small.json"));
        let kinds: Vec<WarningKind> = a.warnings.iter().map(|w| w.kind).collect();
        assert!(kinds.contains(&WarningKind::SkippedMode));
        assert!(kinds.contains(&WarningKind::TooFewPoints));
        assert!(kinds.contains(&WarningKind::HighVariance));
        assert!(!kinds.contains(&WarningKind::Emulation), "self-cost in the fixture is 95 ns");
        let loss = a.warnings.iter().find(|w| w.kind == WarningKind::Losses).unwrap();
        assert_eq!(
            loss.message,
            "the ring buffer dropped 12 events (nftables at 1,000 services); those calls are missing from the percentiles: lower --connections or --rate"
        );
        let few = a.warnings.iter().find(|w| w.kind == WarningKind::TooFewPoints).unwrap();
        assert!(few.message.starts_with("ipvs: too few points for a fit (2 service counts measured: 10, 1,000)"), "{}", few.message);
        assert_eq!(a.losses.ring_reserve_failures, 12);
    }

    #[test]
    fn the_vm_fixture_is_recognised_as_emulated() {
        let a = analyze(&fixture("sweep-6.12-tcg.json"));
        assert!(a.emulation_suspected);
        let w = a.warnings.iter().find(|w| w.kind == WarningKind::Emulation).unwrap();
        assert!(w.message.starts_with("a probe pair costs up to 4,389 ns (kprobe on __task_pid_nr_ns)"), "{}", w.message);
        assert_eq!(a.modes.len(), 4);
        assert_eq!(a.crossovers.len(), 6);
        assert_eq!(a.ipvs_schedulers.len(), 1);
        assert_eq!(a.ipvs_schedulers[0].points.len(), 3);
    }

    #[test]
    fn bracket_points_and_empty_results_are_flagged() {
        let mut r = fixture("small.json");
        r.points[0].backend = "bracket".into();
        let a = analyze(&r);
        assert!(a.warnings.iter().any(|w| w.kind == WarningKind::CoarseBackend));
        assert!(a.warnings.iter().any(|w| w.kind == WarningKind::MixedBackends));
        r.points.clear();
        let a = analyze(&r);
        assert!(a.modes.is_empty() && a.crossovers.is_empty());
        assert!(a.warnings.iter().any(|w| w.kind == WarningKind::NoPoints));
    }
}
