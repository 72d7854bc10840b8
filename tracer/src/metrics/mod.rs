//! `pathcost serve`'s Prometheus metrics.
//!
//! Per-call histograms are fed from the probes' events as they arrive
//! ([`CostMetrics::record`]). What the kernel keeps itself (its log2
//! histograms and the loss counters), the per-packet totals, the probes'
//! own cost and what `detect` last found are read when Prometheus scrapes
//! (`scrape`), so every scrape shows the counters as they are.
//!
//! [`live`] runs it all (attach, collect, refresh, shut down); [`http`]
//! answers scrapes and health checks; [`health`] judges `/healthz` and
//! `/readyz`; [`node`] turns a detection into labels and counts.
//! Every metric is named and explained in the README ("Running on a node").

pub mod health;
pub mod http;
pub mod live;
pub mod node;
mod scrape;

use std::{
    collections::HashMap,
    sync::{atomic::AtomicU64, Arc, Mutex, PoisonError},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, histogram::Histogram},
    registry::{Registry, Unit},
};
use tracer_ebpf::{SiteId, SITE_COUNT};

use crate::{
    collection::{aggregate::AggregateRow, calibration::Corrections, runtime::ProgramRunTime, Call, KernelHistogram, KernelMaps, Losses},
    probes::{attach::SiteStatus, hook_name, Mechanism, ProbeSite, BRACKET},
    statistics::{packets::PacketTotals, SiteKey},
};

/// Upper bounds of the per-call and per-packet histograms, in ns: 100 ns
/// doubling to about 52 ms (then `+Inf`), which covers a fentry-timed
/// conntrack lookup on hardware and a 10,000-service iptables walk under
/// emulation alike.
pub const BUCKET_BOUNDS_NS: [u64; 20] = {
    let mut bounds = [0; 20];
    let mut i = 0;
    while i < bounds.len() {
        bounds[i] = 100 << i;
        i += 1;
    }
    bounds
};

/// Most per-call rows (site, hook, table, chain, IPVS verdict) `serve`
/// keeps, and so most series in each `pathcost_call_*` family (rows that
/// differ only by verdict share one series). The labels come from the
/// node: nf_tables table and base-chain names are whatever its rulesets
/// declare, so without a cap a node that creates tables (firewalld, a CNI,
/// a misbehaving controller) would grow pathcost's memory and every
/// scrape without bound. A kube-proxy node has a few dozen rows (about 10
/// sites × 5 hooks, a handful of tables and base chains); 256 leaves room
/// for other rulesets while bounding a scrape to about 256 × 4 histograms
/// × 22 lines. Calls of a row beyond the cap are counted in
/// `pathcost_events_lost_total{reason="series_over_cap"}` and still go
/// into the per-packet totals and the kernel's own histograms, whose
/// labels are fixed.
pub const MAX_CALL_SERIES: usize = 256;

/// Nanoseconds to the seconds Prometheus wants (base units). Dividing the
/// integer keeps bounds such as 1.6e-6 exact in the exposition.
fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// What the kernel side keeps, read at scrape time: a trait so that the
/// exposition is testable without a kernel.
pub trait KernelCounters: Send + Sync {
    fn losses(&self) -> anyhow::Result<Losses>;
    fn histograms(&self) -> anyhow::Result<Vec<KernelHistogram>>;
    /// The probes' programs' own run time so far (empty where the kernel
    /// keeps no run-time statistics).
    fn program_run_times(&self) -> Vec<ProgramRunTime> {
        Vec::new()
    }
    /// Aggregating mode's per-key histograms.
    fn aggregates(&self) -> anyhow::Result<Vec<AggregateRow>> {
        Ok(Vec::new())
    }
}

impl KernelCounters for KernelMaps {
    fn losses(&self) -> anyhow::Result<Losses> {
        KernelMaps::losses(self)
    }

    fn histograms(&self) -> anyhow::Result<Vec<KernelHistogram>> {
        KernelMaps::histograms(self)
    }

    fn program_run_times(&self) -> Vec<ProgramRunTime> {
        self.programs.run_times()
    }

    fn aggregates(&self) -> anyhow::Result<Vec<AggregateRow>> {
        self.aggregates.read()
    }
}

/// The two text formats Prometheus scrapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposition {
    /// The classic text format (version 0.0.4): what any scraper reads.
    Prometheus,
    /// OpenMetrics 1.0 text, for scrapers that ask for it.
    OpenMetrics,
}

impl Exposition {
    /// The format an `Accept` header asks for.
    pub fn negotiate(accept: Option<&str>) -> Exposition {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Exposition::OpenMetrics,
            _ => Exposition::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Labels of a per-call series: one row of `pathcost trace`'s report.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    site: &'static str,
    /// Netfilter hook (`PRE_ROUTING`, ...), `-` for calls without one.
    hook: &'static str,
    /// iptables table, or nf_tables table; empty for other sites.
    table: String,
    /// nf_tables base chain; empty otherwise.
    chain: String,
    mechanism: &'static str,
}

type HistogramFamily = Family<CallLabels, Histogram, fn() -> Histogram>;

fn call_histogram() -> Histogram {
    Histogram::new(BUCKET_BOUNDS_NS.iter().map(|&ns| seconds(ns)))
}

/// One row's histograms, in the order of [`CALL_HISTOGRAMS`].
struct RowHistograms([Histogram; 4]);

/// (name without the unit, help) of the per-call histograms.
const CALL_HISTOGRAMS: [(&str, &str); 4] = [
    ("pathcost_call_duration", "Time per probed kernel call (inclusive: with probed calls nested in it), as measured"),
    ("pathcost_call_self_duration", "Time per probed kernel call minus the probed calls nested in it, as measured"),
    ("pathcost_call_corrected_duration", "Inclusive time per probed kernel call with the probes' own cost removed"),
    ("pathcost_call_self_corrected_duration", "Self time per probed kernel call with the probes' own cost removed"),
];

/// What one run of the probes is: needed to label and correct its calls.
pub struct ProbeRun {
    /// `uname -r`.
    pub kernel: String,
    pub sites: Vec<SiteStatus>,
    pub corrections: Corrections,
    /// Keep only calls of this network namespace (inode); `None`: all.
    pub netns: Option<u32>,
    /// Aggregating in the kernel: the per-call series are read from the
    /// kernel's aggregates at scrape time instead of recorded from events.
    pub aggregating: bool,
}

/// Mechanism per site id, from the attach outcome.
fn mechanisms(sites: &[SiteStatus]) -> [Option<Mechanism>; SITE_COUNT] {
    let mut out = [None; SITE_COUNT];
    for s in sites {
        let id = if s.site == BRACKET.name { Some(SiteId::Bracket) } else { ProbeSite::by_name(s.site).map(|p| p.id) };
        if let Some(id) = id {
            out[id as usize] = s.mechanism;
        }
    }
    out
}

fn mechanism_name(m: Option<Mechanism>) -> &'static str {
    match m {
        Some(Mechanism::Fentry) => "fentry",
        Some(Mechanism::Kprobe) => "kprobe",
        Some(Mechanism::Bracket) => "bracket",
        Some(Mechanism::Tracepoints) => "tracepoints",
        None => "none",
    }
}

/// The registry `pathcost serve` exposes, and the per-call recording.
pub struct CostMetrics {
    registry: Registry,
    families: [HistogramFamily; 4],
    /// Forwarded packets' transit through the node (with `--egress-device`).
    transit: Histogram,
    /// Histograms already looked up, so a call costs one map lookup.
    rows: Mutex<HashMap<SiteKey, RowHistograms>>,
    state: Arc<scrape::ScrapeState>,
    corrections: Corrections,
    netns: Option<u32>,
}

impl CostMetrics {
    /// `counters` is read at every scrape; `node` is what the detection
    /// refresher last found.
    pub fn new(run: ProbeRun, counters: Box<dyn KernelCounters>, node: Arc<node::NodeSlot>) -> CostMetrics {
        let mut registry = Registry::default();
        let families: [HistogramFamily; 4] =
            std::array::from_fn(|_| Family::new_with_constructor(call_histogram as fn() -> Histogram));
        // Aggregating, the scrape encodes these from the kernel's histograms.
        if !run.aggregating {
            for ((name, help), family) in CALL_HISTOGRAMS.iter().zip(&families) {
                registry.register_with_unit(*name, *help, Unit::Seconds, family.clone());
            }
        }
        let transit = call_histogram();
        registry.register_with_unit(
            "pathcost_packet_transit_duration",
            "Time from a forwarded packet's arrival on the client-facing device to its departure on the backend-facing device (net:netif_receive_skb to net:net_dev_start_xmit of the same skb); only with serve --egress-device",
            Unit::Seconds,
            transit.clone(),
        );
        let mechanisms = mechanisms(&run.sites);
        let state = Arc::new(scrape::ScrapeState {
            kernel_release: run.kernel,
            counters,
            undecodable: AtomicU64::new(0),
            series_over_cap: AtomicU64::new(0),
            packets: Mutex::new(PacketTotals::default()),
            packet_source: scrape::packet_source(&mechanisms),
            self_cost: run.corrections.costs.clone(),
            aggregates: run
                .aggregating
                .then(|| scrape::AggregatedCalls { corrections: run.corrections.clone(), netns: run.netns }),
            sites: run.sites,
            mechanisms,
            node,
        });
        registry.register_collector(Box::new(Arc::clone(&state)));
        CostMetrics {
            registry,
            families,
            transit,
            rows: Mutex::new(HashMap::new()),
            state,
            corrections: run.corrections,
            netns: run.netns,
        }
    }

    /// Adds one call to its row's histograms and to its packet's total.
    pub fn record(&self, call: &Call) {
        if call.site == SiteId::Calibration || self.netns.is_some_and(|n| n != call.netns) {
            return;
        }
        if call.site == SiteId::Transit {
            // A span of tracepoints, not a probed call: nothing to correct,
            // and not part of the per-packet netfilter time.
            self.transit.observe(seconds(call.duration_ns));
            return;
        }
        let c = &self.corrections;
        let values = [
            call.duration_ns,
            call.self_ns,
            c.inclusive(call.site, call.duration_ns, call.descendants),
            c.exclusive(call.site, call.self_ns, call.children),
        ];
        self.state.packets.lock().unwrap_or_else(PoisonError::into_inner).record(call, c);
        let key = SiteKey::of(call);
        let mut rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        if rows.len() >= MAX_CALL_SERIES && !rows.contains_key(&key) {
            self.state.series_over_cap.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        let row = rows.entry(key).or_insert_with_key(|key| {
            let labels = CallLabels {
                site: key.site_name(),
                hook: key.hook.map_or("-", hook_name),
                table: key.table.clone(),
                chain: key.chain.clone(),
                mechanism: mechanism_name(self.state.mechanisms[key.site as usize]),
            };
            RowHistograms(std::array::from_fn(|i| self.families[i].get_or_create_owned(&labels)))
        });
        for (h, v) in row.0.iter().zip(values) {
            h.observe(seconds(v));
        }
    }

    /// Ring-buffer records userspace could not decode (kept by the event
    /// stream, exported as a loss).
    pub fn set_undecodable(&self, n: u64) {
        self.state.undecodable.store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// The whole exposition, as a scrape gets it.
    pub fn encode(&self, format: Exposition) -> String {
        let mut out = String::new();
        let encoded = match format {
            Exposition::Prometheus => prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry),
            Exposition::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &self.registry),
        };
        // Writing to a String fails only on a formatting bug; serve what
        // was written rather than nothing.
        if let Err(e) = encoded {
            log::error!("encoding the metrics failed part-way: {e}");
        }
        out
    }
}

#[cfg(test)]
mod tests;
