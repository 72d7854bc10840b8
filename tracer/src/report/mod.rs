//! The trace report: one serialisable struct (values in ns, formatted only
//! on output) rendered as a terminal table or JSON.

pub mod export;
pub mod table;

pub use table::sweep_table;

use serde::Serialize;

use crate::{
    collection::{calibration::SelfCost, runtime::PairRunTime, KernelHistogram, Losses},
    probes::{attach::SiteStatus, hook_name},
    results::SiteRow,
    statistics::{packets::PacketTotals, CallStatistics, Summary},
};

/// Bumped whenever a field changes meaning or is removed.
pub const TRACE_SCHEMA_VERSION: u32 = 1;

/// The in-kernel count for a site and hook: complete even when the ring
/// buffer dropped events.
#[derive(Clone, Debug, Serialize)]
pub struct KernelRow {
    pub site: &'static str,
    pub hook: &'static str,
    pub count: u64,
    pub mean_ns: f64,
    pub max_ns: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TraceReport {
    pub schema_version: u32,
    pub kernel: String,
    pub duration_s: f64,
    pub sites: Vec<SiteStatus>,
    pub rows: Vec<SiteRow>,
    /// Netfilter time per packet, over all hooks it traversed here.
    pub per_packet: Summary,
    /// The same with the probes' own cost removed from every hook call.
    pub per_packet_corrected: Summary,
    pub in_kernel: Vec<KernelRow>,
    pub losses: Losses,
    /// The probes' own cost, per mechanism in use (empty: not calibrated,
    /// corrected figures equal raw ones).
    pub self_cost: Vec<SelfCost>,
    /// The entry and exit programs' own run time per call, per site pair
    /// and for the calibration pair (BPF run-time statistics; empty where
    /// the kernel does not keep them).
    #[serde(default)]
    pub program_run: Vec<PairRunTime>,
    /// How the rows were produced.
    #[serde(default)]
    pub collection: Collection,
}

/// How per-call figures reach userspace (`--collect`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Collection {
    /// One ring-buffer event per call: exact histograms (3 significant
    /// digits), exclusive times per call, per-packet totals.
    #[default]
    Events,
    /// Log-linear histograms in the kernel (16 buckets per power of two,
    /// percentiles within ~3%), no event per call: cheaper per call; self
    /// times and nested-call corrections as per-row means; no per-packet totals.
    Kernel,
}

impl Collection {
    /// One line for reports: how the figures were produced.
    pub fn describe(self) -> &'static str {
        match self {
            Collection::Events => "per-call events through the ring buffer (hdrhistogram, 3 significant digits)",
            Collection::Kernel => "in-kernel log-linear histograms (16 per power of two, bucket middles, within ~3%); exclusive and corrected times from per-row means; no per-packet totals",
        }
    }
}

impl TraceReport {
    pub fn build(
        kernel: String,
        duration_s: f64,
        sites: Vec<SiteStatus>,
        stats: &CallStatistics,
        packets: &PacketTotals,
        kernel_histograms: &[KernelHistogram],
        losses: Losses,
    ) -> TraceReport {
        let rows = stats
            .rows
            .iter()
            .map(|(key, d)| SiteRow {
                site: key.site_name().to_owned(),
                hook: key.hook.map_or("-", hook_name).to_owned(),
                table: key.table.clone(),
                chain: key.chain.clone(),
                verdict: key.verdict.to_owned(),
                inclusive: Summary::of(&d.inclusive),
                exclusive: Summary::of(&d.exclusive),
                inclusive_corrected: Summary::of(&d.inclusive_corrected),
                exclusive_corrected: Summary::of(&d.exclusive_corrected),
            })
            .collect();
        let in_kernel = kernel_histograms
            .iter()
            .filter(|h| h.site != tracer_ebpf::SiteId::Calibration)
            .map(|h| KernelRow {
                site: crate::probes::ProbeSite::by_id(h.site).map_or("?", |s| s.name),
                hook: h.hook.map_or("-", hook_name),
                count: h.count,
                mean_ns: h.sum_ns as f64 / h.count.max(1) as f64,
                max_ns: h.max_ns,
            })
            .collect();
        TraceReport {
            schema_version: TRACE_SCHEMA_VERSION,
            kernel,
            duration_s,
            sites,
            rows,
            per_packet: Summary::of(&packets.per_packet),
            per_packet_corrected: Summary::of(&packets.per_packet_corrected),
            in_kernel,
            losses,
            self_cost: stats.corrections.costs.clone(),
            program_run: Vec::new(),
            collection: Collection::Events,
        }
    }
}

/// Output formats of `trace`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
}

pub fn render(report: &TraceReport, format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Table => table::render(report),
        Format::Json => serde_json::to_string_pretty(report)? + "\n",
    })
}
