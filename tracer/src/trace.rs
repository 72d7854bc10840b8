//! A tracing session: attach, calibrate, collect until told to stop,
//! detach, and build the report. Shared by `trace`, `selftest`, `bench`,
//! `sweep` and tests. The report is one serialisable struct (values in ns,
//! formatted only on output, by [`crate::report`]); `trace --format json`
//! writes it as it is.

use std::{future::Future, time::{Duration, Instant}};

use anyhow::{Context as _, Result};
use serde::Serialize;
use tracer_ebpf::SiteId;

use crate::{
    collection::{
        self, calibration::{self, SelfCost}, runtime::{self, PairRunTime}, Call, EventStream, KernelHistogram,
        KernelMaps, Losses,
    },
    probes::{
        attach::{attach, AttachRequest, AttachedProbes, SiteStatus},
        hook_name, Mechanism, ProbeSite,
    },
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
                site: ProbeSite::by_id(h.site).map_or("?", |s| s.name),
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

/// What a session measures and how.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub request: AttachRequest,
    /// Measure the probes' own cost before collecting.
    pub calibrate: bool,
    /// Keep only calls in this network namespace (inode); `None`: all.
    pub netns: Option<u32>,
    /// Also keep every call, for analyses by time window (the sweep).
    pub keep_calls: bool,
}

/// Attached probes collecting into statistics.
pub struct Session {
    probes: AttachedProbes,
    maps: KernelMaps,
    events: EventStream,
    /// Aggregating in the kernel (no events): the rows come from the
    /// kernel's aggregates.
    aggregating: bool,
    stats: CallStatistics,
    packets: PacketTotals,
    filter: CallFilter,
    started: Instant,
}

/// Where a session's calls go: statistics, per-packet totals, and
/// optionally a list of the calls themselves.
struct CallFilter {
    netns: Option<u32>,
    kept: Option<Vec<Call>>,
}

impl CallFilter {
    fn record(&mut self, stats: &mut CallStatistics, packets: &mut PacketTotals, call: Call) {
        if self.netns.is_some_and(|n| n != call.netns) {
            return;
        }
        stats.record(&call);
        packets.record(&call, &stats.corrections);
        if let Some(kept) = &mut self.kept {
            kept.push(call);
        }
    }
}

/// Attached, calibrated probes and their readers: what every measuring
/// command (trace, sweep, serve) starts from.
pub struct LiveProbes {
    pub probes: AttachedProbes,
    pub maps: KernelMaps,
    pub events: EventStream,
    /// The request aggregates in the kernel (`emit_events` off): the rows
    /// are in `maps.aggregates`.
    pub aggregating: bool,
    pub corrections: calibration::Corrections,
}

impl LiveProbes {
    /// Attaches, then (if asked) measures the probes' own cost for every
    /// mechanism in use; synchronous, so callers can start traffic knowing
    /// the probes are live.
    pub fn start(request: &AttachRequest, calibrate: bool) -> Result<LiveProbes> {
        let mut probes = attach(request)?;
        let mut maps = KernelMaps::take(&mut probes.ebpf)?;
        let mut events = EventStream::take(&mut probes.ebpf)?;
        let aggregating = !request.emit_events;
        let attached: Vec<(SiteId, Mechanism)> = probes
            .sites
            .iter()
            .filter_map(|s| Some((ProbeSite::by_name(s.site)?.id, s.mechanism?)))
            .collect();
        let mut costs = Vec::new();
        if calibrate {
            for m in [Mechanism::Fentry, Mechanism::Kprobe] {
                if attached.iter().any(|&(_, used)| used == m) {
                    costs.push(calibration::calibrate(&mut probes.ebpf, &maps, m)?);
                    // Its events are no measurement; make room for the next.
                    events.drain(|_| {});
                }
            }
            // A calibration kprobe is attached entry first: a call of its
            // target from any process between the two attachments left a
            // frame whose exit never comes, and once calibration is
            // detached nothing pops it. Enough of them on one CPU fill its
            // stack and every later call there goes unmatched (seen on 6.1:
            // half the exits unmatched, no event from the traffic's CPU).
            maps.clear_call_stacks()?;
        }
        let corrections = calibration::Corrections::new(costs, &attached);
        Ok(LiveProbes { probes, maps, events, aggregating, corrections })
    }
}

impl Session {
    /// Attaches (and calibrates) synchronously, so callers can start
    /// traffic knowing the probes are live.
    pub fn start(opts: &SessionOptions) -> Result<Session> {
        let LiveProbes { probes, maps, events, aggregating, corrections } = LiveProbes::start(&opts.request, opts.calibrate)?;
        Ok(Session {
            probes,
            maps,
            events,
            aggregating,
            stats: CallStatistics::new(corrections),
            packets: PacketTotals::default(),
            filter: CallFilter { netns: opts.netns, kept: opts.keep_calls.then(Vec::new) },
            started: Instant::now(),
        })
    }

    pub fn sites(&self) -> &[SiteStatus] {
        &self.probes.sites
    }

    /// How this session removes the probes' own cost.
    pub fn corrections(&self) -> &calibration::Corrections {
        &self.stats.corrections
    }

    pub fn maps(&self) -> &KernelMaps {
        &self.maps
    }

    /// Runs blocking `work` (traffic, typically) on its own thread while
    /// draining the ring here, so no event waits for the work to end;
    /// returns what the work returned.
    pub async fn collect_during<T: Send + 'static>(
        &mut self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        let worker = tokio::task::spawn_blocking(move || {
            let out = work();
            let _ = done.send(());
            out
        });
        self.collect_until(
            async {
                let _ = finished.await;
            },
            None,
            |_| {},
        )
        .await?;
        worker.await.context("the work running beside the collection panicked")
    }

    /// Collects events until `stop` completes, calling `live` every
    /// `interval` with a snapshot report.
    pub async fn collect_until(
        &mut self,
        stop: impl Future<Output = ()>,
        interval: Option<Duration>,
        mut live: impl FnMut(&TraceReport),
    ) -> Result<()> {
        tokio::pin!(stop);
        let mut ticker = tokio::time::interval(interval.unwrap_or(Duration::from_secs(3600)));
        ticker.tick().await;
        loop {
            let (stats, packets, filter) = (&mut self.stats, &mut self.packets, &mut self.filter);
            tokio::select! {
                batch = self.events.next_batch(|c| filter.record(stats, packets, c)) => {
                    batch?;
                    self.probes.flush_log();
                }
                _ = ticker.tick(), if interval.is_some() => live(&self.snapshot()?),
                () = &mut stop => break,
            }
        }
        Ok(())
    }

    /// Takes in whatever is already in the ring, without waiting.
    pub fn drain(&mut self) {
        let (stats, packets, filter) = (&mut self.stats, &mut self.packets, &mut self.filter);
        self.events.drain(|c| filter.record(stats, packets, c));
        self.probes.flush_log();
    }

    fn snapshot(&self) -> Result<TraceReport> {
        let mut losses = self.maps.losses()?;
        losses.undecodable_events = self.events.undecodable;
        losses.bpf_recursion_misses = collection::recursion_misses(&self.probes.ebpf);
        let aggregated = match self.aggregating {
            true => Some(CallStatistics::from_aggregates(
                &self.maps.aggregates.read()?,
                self.stats.corrections.clone(),
                self.filter.netns,
            )),
            false => None,
        };
        let mut report = TraceReport::build(
            self.probes.kernel.release.clone(),
            self.started.elapsed().as_secs_f64(),
            self.probes.sites.clone(),
            aggregated.as_ref().unwrap_or(&self.stats),
            &self.packets,
            &self.maps.histograms()?,
            losses,
        );
        report.program_run = runtime::pair_run_times(&runtime::program_run_times(&self.probes.ebpf));
        report.collection = if self.aggregating { Collection::Kernel } else { Collection::Events };
        Ok(report)
    }

    /// Detaches everything and returns the final report, with the kept
    /// calls when `keep_calls` was set.
    pub fn finish(mut self) -> Result<(TraceReport, Vec<Call>)> {
        self.drain();
        self.packets.flush();
        let report = self.snapshot()?;
        drop(self.probes);
        Ok((report, self.filter.kept.take().unwrap_or_default()))
    }
}

/// SIGINT and SIGTERM, caught from the moment [`StopSignals::install`]
/// returns: a signal that arrives while probes are being attached or
/// calibrated is kept and ends the run at its next wait, instead of killing
/// the process with nothing written.
pub struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Replaces the default action (exit at once) of SIGINT and SIGTERM for
    /// the rest of the process. Needs a tokio runtime.
    pub fn install() -> Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
        })
    }

    /// Completes with the signal's name when SIGINT or SIGTERM arrives.
    pub async fn received(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }

    /// Completes on SIGINT, SIGTERM, or after `duration`.
    pub async fn or_after(&mut self, duration: Option<Duration>) {
        let timer = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.received() => {}
            () = timer => {}
        }
    }
}
