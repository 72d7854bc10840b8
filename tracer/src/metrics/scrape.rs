//! What is read when Prometheus scrapes: the kernel's own histograms and
//! counters, the per-packet totals, the probes' own cost, the probe sites
//! and what `detect` last found. Reading at scrape time keeps these exact:
//! nothing is sampled in between.

use std::{
    fmt,
    sync::{atomic::AtomicU64, Arc, Mutex, PoisonError},
};

use hdrhistogram::Histogram as HdrHistogram;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet},
    metrics::MetricType,
    registry::Unit,
};
use tracer_ebpf::{SiteId, HIST_BUCKETS, SITE_COUNT};

use super::{mechanism_name, node::NodeSlot, seconds, CallLabels, KernelCounters, BUCKET_BOUNDS_NS, CALL_HISTOGRAMS};
use crate::{
    collection::{calibration::{Corrections, SelfCost}, KernelHistogram},
    probes::{attach::SiteStatus, hook_name, Mechanism, ProbeSite},
    statistics::{packets::PacketTotals, CallStatistics},
};

/// In-kernel histograms: bucket `i` holds calls of `[2^i, 2^(i+1))` ns.
/// Exported from `le` = 128 ns (2^7) to 67 ms (2^26), then `+Inf`.
const KERNEL_FIRST: usize = 6;
const KERNEL_LAST: usize = 25;
const _: () = assert!(KERNEL_LAST < HIST_BUCKETS);

pub(super) struct ScrapeState {
    pub kernel_release: String,
    pub counters: Box<dyn KernelCounters>,
    pub undecodable: AtomicU64,
    /// Calls left out of the per-call histograms because their row would
    /// have passed [`super::MAX_CALL_SERIES`].
    pub series_over_cap: AtomicU64,
    pub packets: Mutex<PacketTotals>,
    /// (site, mechanism) whose calls make the per-packet totals, if any
    /// such site is attached.
    pub packet_source: Option<(&'static str, &'static str)>,
    pub sites: Vec<SiteStatus>,
    pub mechanisms: [Option<Mechanism>; SITE_COUNT],
    pub self_cost: Vec<SelfCost>,
    pub node: Arc<NodeSlot>,
    /// `Some` when aggregating in the kernel: the per-call series come from here.
    pub aggregates: Option<AggregatedCalls>,
}

/// The kernel's aggregates and what is needed to turn them into the same
/// per-call series that events would have produced.
pub(super) struct AggregatedCalls {
    pub corrections: Corrections,
    pub netns: Option<u32>,
}

impl fmt::Debug for ScrapeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScrapeState").field("kernel_release", &self.kernel_release).finish_non_exhaustive()
    }
}

/// Per-packet totals come from `nf_hook_slow` (a packet's hook calls) or,
/// with the tracepoint backend, from the PREROUTING bracket.
pub(super) fn packet_source(mechanisms: &[Option<Mechanism>; SITE_COUNT]) -> Option<(&'static str, &'static str)> {
    [SiteId::NfHookSlow, SiteId::Bracket].into_iter().find_map(|id| {
        let m = mechanisms[id as usize]?;
        Some((ProbeSite::by_id(id)?.name, mechanism_name(Some(m))))
    })
}

/// (upper bound in seconds, calls in that bucket only), `+Inf` last.
type Buckets = Vec<(f64, u64)>;

/// The kernel's log2 buckets regrouped to `le` bounds of 2^(i+1) ns.
fn kernel_buckets(h: &KernelHistogram) -> Buckets {
    let mut out = Vec::with_capacity(KERNEL_LAST - KERNEL_FIRST + 2);
    out.push((seconds(1 << (KERNEL_FIRST + 1)), h.buckets[..=KERNEL_FIRST].iter().sum()));
    for i in KERNEL_FIRST + 1..=KERNEL_LAST {
        out.push((seconds(1 << (i + 1)), h.buckets[i]));
    }
    out.push((f64::INFINITY, h.buckets[KERNEL_LAST + 1..].iter().sum()));
    out
}

/// An hdrhistogram of ns values as Prometheus buckets, with its sum (exact
/// to hdrhistogram's 3 significant digits).
fn hdr_buckets(h: &HdrHistogram<u64>) -> (f64, u64, Buckets) {
    let mut counts = vec![0u64; BUCKET_BOUNDS_NS.len() + 1];
    let mut sum_ns = 0.0;
    for v in h.iter_recorded() {
        let value = h.median_equivalent(v.value_iterated_to());
        sum_ns += value as f64 * v.count_at_value() as f64;
        let slot = BUCKET_BOUNDS_NS.iter().position(|&b| value <= b).unwrap_or(BUCKET_BOUNDS_NS.len());
        counts[slot] += v.count_at_value();
    }
    let bounds = BUCKET_BOUNDS_NS.iter().map(|&b| seconds(b)).chain([f64::INFINITY]);
    (sum_ns / 1e9, h.len(), bounds.zip(counts).collect())
}

fn histogram(
    m: &mut MetricEncoder,
    labels: &impl EncodeLabelSet,
    sum: f64,
    count: u64,
    buckets: &Buckets,
) -> fmt::Result {
    m.encode_family(labels)?.encode_histogram::<NoLabelSet>(sum, count, buckets, None)
}

fn counter(m: &mut MetricEncoder, labels: &impl EncodeLabelSet, v: u64) -> fmt::Result {
    m.encode_family(labels)?.encode_counter::<NoLabelSet, u64, u64>(&v, None)
}

fn gauge(m: &mut MetricEncoder, labels: &impl EncodeLabelSet, v: f64) -> fmt::Result {
    m.encode_family(labels)?.encode_gauge(&v)
}

impl ScrapeState {
    fn site_labels(&self, h: &KernelHistogram) -> [(&'static str, &'static str); 3] {
        [
            ("site", ProbeSite::by_id(h.site).map_or("?", |s| s.name)),
            ("hook", h.hook.map_or("-", hook_name)),
            ("mechanism", mechanism_name(self.mechanisms[h.site as usize])),
        ]
    }

    /// Aggregating: the per-call series (same names and labels as from
    /// events), read from the kernel's log-linear histograms now. Only the
    /// inclusive family: the kernel keeps self and corrected times as sums,
    /// and histograms rebuilt by shifting the buckets by a mean that moves
    /// would let a bucket count go down between scrapes, which a Prometheus
    /// histogram must never do (seen in the load test). Their means are in
    /// `trace`'s report; with `--collect events` they are histograms too.
    fn encode_aggregates(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let Some(a) = &self.aggregates else { return Ok(()) };
        let rows = match self.counters.aggregates() {
            Ok(rows) => rows,
            Err(e) => {
                log::warn!("reading the in-kernel aggregates: {e:#}");
                return Ok(());
            }
        };
        let stats = CallStatistics::from_aggregates(&rows, a.corrections.clone(), a.netns);
        for (i, (name, help)) in CALL_HISTOGRAMS.iter().enumerate().take(1) {
            let mut m = enc.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
            for (key, d) in &stats.rows {
                let labels = CallLabels {
                    site: key.site_name(),
                    hook: key.hook.map_or("-", hook_name),
                    table: key.table.clone(),
                    chain: key.chain.clone(),
                    mechanism: mechanism_name(self.mechanisms[key.site as usize]),
                };
                let h = [&d.inclusive, &d.exclusive, &d.inclusive_corrected, &d.exclusive_corrected][i];
                let (sum, count, buckets) = hdr_buckets(h);
                histogram(&mut m, &labels, sum, count, &buckets)?;
            }
        }
        Ok(())
    }

    fn encode_kernel(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let histograms: Vec<KernelHistogram> = match self.counters.histograms() {
            Ok(h) => h.into_iter().filter(|h| h.site != SiteId::Calibration).collect(),
            Err(e) => {
                log::warn!("reading the in-kernel histograms: {e:#}");
                Vec::new()
            }
        };
        let mut m = enc.encode_descriptor(
            "pathcost_kernel_call_duration",
            "Time per probed call counted in the kernel (log2 buckets; complete even when the ring buffer dropped events)",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for h in &histograms {
            histogram(&mut m, &self.site_labels(h), seconds(h.sum_ns), h.count, &kernel_buckets(h))?;
        }
        let mut m = enc.encode_descriptor(
            "pathcost_kernel_call_self",
            "Self time (minus nested probed calls) of the probed calls counted in the kernel",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        for h in &histograms {
            m.encode_family(&self.site_labels(h))?
                .encode_counter::<NoLabelSet, f64, f64>(&seconds(h.self_sum_ns), None)?;
        }
        let mut m = enc.encode_descriptor(
            "pathcost_kernel_call_max",
            "Longest probed call counted in the kernel since pathcost started",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for h in &histograms {
            gauge(&mut m, &self.site_labels(h), seconds(h.max_ns))?;
        }
        Ok(())
    }

    fn encode_losses(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let mut l = match self.counters.losses() {
            Ok(l) => l,
            Err(e) => {
                log::warn!("reading the loss counters: {e:#}");
                return Ok(());
            }
        };
        l.undecodable_events = self.undecodable.load(std::sync::atomic::Ordering::Relaxed);
        let mut m = enc.encode_descriptor(
            "pathcost_events_lost",
            "Calls the figures miss or could not time, by reason (always exported; should stay 0 or grow slowly)",
            None,
            MetricType::Counter,
        )?;
        for (reason, v) in [
            ("ring_reserve_failures", l.ring_reserve_failures),
            ("unmatched_exits", l.unmatched_exits),
            ("orphaned_frames", l.orphaned_frames),
            ("depth_overflows", l.depth_overflows),
            ("negative_durations", l.negative_durations),
            ("undecodable_events", l.undecodable_events),
            ("brackets_unclosed", l.brackets_unclosed),
            ("aggregate_overflows", l.aggregate_overflows),
            ("transits_unclosed", l.transits_unclosed),
            ("series_over_cap", self.series_over_cap.load(std::sync::atomic::Ordering::Relaxed)),
        ] {
            counter(&mut m, &[("reason", reason)], v)?;
        }
        let mut m = enc.encode_descriptor(
            "pathcost_probe_events",
            "Probe bookkeeping counted in the kernel: entries seen, entry/exit pairs matched, brackets and transits opened and closed",
            None,
            MetricType::Counter,
        )?;
        for (kind, v) in [
            ("entries", l.entries),
            ("matched", l.matched),
            ("brackets_opened", l.brackets_opened),
            ("brackets_closed", l.brackets_closed),
            ("transits_opened", l.transits_opened),
            ("transits_closed", l.transits_closed),
        ] {
            counter(&mut m, &[("kind", kind)], v)?;
        }
        Ok(())
    }

    fn encode_packets(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let (raw, corrected) = {
            let mut p = self.packets.lock().unwrap_or_else(PoisonError::into_inner);
            p.expire(crate::synthesis::traffic::monotonic_ns());
            (hdr_buckets(&p.per_packet), hdr_buckets(&p.per_packet_corrected))
        };
        for (name, help, (sum, count, buckets)) in [
            (
                "pathcost_packet_netfilter_duration",
                "Netfilter time per packet: the union of its hook calls here (or its PREROUTING bracket), as measured",
                raw,
            ),
            (
                "pathcost_packet_netfilter_corrected_duration",
                "Netfilter time per packet with the probes' own cost removed from every hook call",
                corrected,
            ),
        ] {
            let mut m = enc.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
            if let Some((site, mechanism)) = self.packet_source {
                histogram(&mut m, &[("site", site), ("mechanism", mechanism)], sum, count, &buckets)?;
            }
        }
        Ok(())
    }

    fn encode_probes(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        for (name, help, value) in [
            (
                "pathcost_probe_pair_cost",
                "Wall time one entry/exit probe pair adds to a call, measured at start-up",
                (|c: &SelfCost| c.pair_ns) as fn(&SelfCost) -> f64,
            ),
            (
                "pathcost_probe_span_cost",
                "Part of a probe pair's cost inside every measured duration (what corrected figures subtract)",
                |c: &SelfCost| c.span_ns,
            ),
        ] {
            let mut m = enc.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Gauge)?;
            for c in &self.self_cost {
                gauge(&mut m, &[("mechanism", c.mechanism.as_str()), ("target", c.target.as_str())], value(c) / 1e9)?;
            }
        }
        // The programs' own run time: with the pair cost above, it says how
        // much of what a probe pair adds is spent inside pathcost's programs.
        let programs = self.counters.program_run_times();
        let mut m = enc.encode_descriptor(
            "pathcost_probe_program_run",
            "Time spent inside each of pathcost's eBPF programs since start-up (BPF run-time statistics); divide by pathcost_probe_program_runs_total for the time per run",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        for p in &programs {
            m.encode_family(&[("program", p.program.as_str())])?
                .encode_counter::<NoLabelSet, f64, f64>(&seconds(p.run_time_ns), None)?;
        }
        let mut m = enc.encode_descriptor(
            "pathcost_probe_program_runs",
            "Runs of each of pathcost's eBPF programs counted by the kernel's BPF run-time statistics",
            None,
            MetricType::Counter,
        )?;
        for p in &programs {
            counter(&mut m, &[("program", p.program.as_str())], p.run_count)?;
        }
        let mut m = enc.encode_descriptor(
            "pathcost_probe",
            "A probe site: the kernel symbol it resolved to and the mechanism attached (none: absent)",
            None,
            MetricType::Info,
        )?;
        for s in &self.sites {
            let labels = [
                ("site", s.site),
                ("symbol", s.symbol.as_deref().unwrap_or("")),
                ("module", s.module.as_deref().unwrap_or("vmlinux")),
                ("mechanism", mechanism_name(s.mechanism)),
            ];
            m.encode_info(&labels)?;
        }
        Ok(())
    }

    fn encode_node(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let node = self.node.snapshot();
        let mut m = enc.encode_descriptor(
            "pathcost_node",
            "What this node runs, from pathcost's detection (refreshed every --refresh)",
            None,
            MetricType::Info,
        )?;
        if let Some(f) = &node.facts {
            m.encode_info(&[
                ("kernel", self.kernel_release.as_str()),
                ("kube_proxy_mode", f.kube_proxy_mode.as_str()),
                ("mode_source", f.mode_source),
                ("confidence", f.confidence),
                ("iptables_backend", f.iptables_backend.as_str()),
            ])?;
        }
        for (name, help, endpoints) in [
            (
                "pathcost_kube_services",
                "Service ports kube-proxy programmed, per state found (active: the running mode's; counted_by: netlink, or the node's tool where the kernel did not answer)",
                false,
            ),
            (
                "pathcost_kube_endpoints",
                "Endpoints kube-proxy programmed, per state found (active: the running mode's; counted_by: netlink or tool)",
                true,
            ),
        ] {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for c in node.facts.iter().flat_map(|f| &f.counts) {
                let Some(v) = (if endpoints { c.endpoints } else { Some(c.services) }) else { continue };
                let labels = [
                    ("kube_proxy_mode", c.mode),
                    ("source", c.source.as_str()),
                    ("active", if c.active { "true" } else { "false" }),
                    ("counted_by", c.counted_by),
                ];
                gauge(&mut m, &labels, v as f64)?;
            }
        }
        let mut m = enc.encode_descriptor(
            "pathcost_detection_unreadable_inputs",
            "Inputs the last detection could not read (1 each; tool failed, permission denied, or output this version cannot parse): their service counts are unknown, not 0",
            None,
            MetricType::Gauge,
        )?;
        for input in node.facts.iter().flat_map(|f| &f.unreadable) {
            gauge(&mut m, &[("input", *input)], 1.0)?;
        }
        let mut m = enc.encode_descriptor(
            "pathcost_detection_count_disagreements",
            "Counts the kernel (netlink) and the node's tool both gave, with different figures (1 each; netlink's is exported)",
            None,
            MetricType::Gauge,
        )?;
        for count in node.facts.iter().flat_map(|f| &f.disagreements) {
            gauge(&mut m, &[("count", count.as_str())], 1.0)?;
        }
        let mut m = enc.encode_descriptor(
            "pathcost_detection_runs",
            "Runs of the node detection behind pathcost_node_info, by outcome",
            None,
            MetricType::Counter,
        )?;
        counter(&mut m, &[("outcome", "ok")], node.runs_ok)?;
        counter(&mut m, &[("outcome", "failed")], node.runs_failed)?;
        let mut m = enc.encode_descriptor(
            "pathcost_detection_last_success_timestamp",
            "Unix time of the last detection that succeeded",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        if let Some(t) = node.last_success_unix {
            m.encode_gauge(&t)?;
        }
        Ok(())
    }
}

impl Collector for ScrapeState {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        self.encode_aggregates(&mut enc)?;
        self.encode_kernel(&mut enc)?;
        self.encode_losses(&mut enc)?;
        self.encode_packets(&mut enc)?;
        self.encode_probes(&mut enc)?;
        self.encode_node(&mut enc)
    }
}
