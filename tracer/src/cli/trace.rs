//! `pathcost trace`: attach to the live kernel and time real traffic.

use std::{path::PathBuf, time::Duration};

use anyhow::Result;
use tracer::{
    probes::{
        attach::AttachRequest,
        Backend, SiteList, SITES,
    },
    report::{self, Collection, Format, TraceReport},
    trace::{Session, SessionOptions, StopSignals},
};

use super::{check_outputs, packet_filter, parse_duration, write_output};

/// Attach to the live kernel and time real traffic.
///
/// Prints a live summary every --interval and a final report per probe
/// site, netfilter hook and table/chain: count, mean, p50, p90, p99 and
/// max in ns, raw and corrected for the probes' own cost, which mechanism
/// each site uses, and every loss counter. Stops after --duration, on
/// Ctrl-C or on SIGTERM, and detaches everything. Changes nothing on the
/// node.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// How long to trace (e.g. 30s, 5m, 500ms); default: until Ctrl-C.
    #[arg(long, short, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Probe sites, comma-separated (nf_hook_slow, ipt_do_table,
    /// nft_do_chain, ip_vs_in, ip_vs_schedule, ip_vs_conn_in_get,
    /// ip_vs_nat_xmit).
    /// Default: all but ip_vs_conn_in_get, skipping those whose module
    /// is not loaded. Named sites must all be available.
    #[arg(long)]
    sites: Option<SiteList>,
    /// Print a live summary this often (e.g. 5s); 0 disables it.
    #[arg(long, short, value_parser = parse_duration, default_value = "5s")]
    interval: Duration,
    /// Probe mechanism: best available per site, or only one kind.
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    backend: Backend,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Write the final report here instead of stdout ("-" is stdout).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Skip measuring the probes' own cost at start-up.
    #[arg(long)]
    no_calibrate: bool,
    /// Keep only packets of this network namespace, given as a path
    /// (/proc/1/ns/net is the host's, /run/netns/NAME a named one).
    #[arg(long)]
    netns: Option<PathBuf>,
    /// Ingress device whose packets the tracepoint bracket times (looked
    /// up in pathcost's own namespace); default: every device but lo.
    #[arg(long)]
    device: Option<String>,
    /// Also time each forwarded packet's transit: from its arrival on
    /// --device to its departure on this device (net:netif_receive_skb to
    /// net:net_dev_start_xmit of the same skb). Covers packets the node
    /// forwards (to a pod or a remote endpoint); not packets delivered to a
    /// local socket (hostNetwork endpoints) nor those sent by the node
    /// itself.
    #[arg(long, requires = "device")]
    egress_device: Option<String>,
    /// Also write FORMAT (table, md, csv, json) to PATH ("-" is
    /// stdout); repeatable, e.g. --export md=trace.md --export csv=calls.csv.
    #[arg(long, value_name = "FORMAT=PATH")]
    export: Vec<tracer::report::export::ExportTarget>,
    /// How per-call figures are collected: `events` (one ring-buffer event
    /// per call: exact, per-packet totals) or `kernel` (log-linear
    /// histograms in the kernel: cheaper per call, percentiles within ~3%,
    /// no per-packet totals). Default: events for runs of --duration 60s or
    /// less, kernel for longer or unbounded runs.
    #[arg(long, value_enum)]
    collect: Option<Collection>,
}

/// Runs up to this long collect events by default; longer ones aggregate.
const LONG_RUN: Duration = Duration::from_secs(60);

pub async fn run(args: Args) -> Result<()> {
    // Caught from here on: a signal during attach or calibration still
    // ends in a report (of what was measured, possibly nothing).
    let mut signals = StopSignals::install()?;
    check_outputs(args.output.as_deref(), &args.export)?;
    let explicit = args.sites.is_some();
    let sites = args.sites.map_or_else(|| SITES.iter().filter(|s| s.default).collect(), |l| l.0);
    let interval = (!args.interval.is_zero()).then_some(args.interval);
    let (netns, bracket) =
        packet_filter(args.netns.as_deref(), args.device.as_deref(), args.egress_device.as_deref())?;
    let mut session = Session::start(&SessionOptions {
        request: AttachRequest {
            sites,
            explicit,
            backend: args.backend,
            emit_events: args.collect.unwrap_or(if args.duration.is_some_and(|d| d <= LONG_RUN) {
                Collection::Events
            } else {
                Collection::Kernel
            }) == Collection::Events,
            bracket: Some(bracket),
            transit: args.egress_device.is_some(),
        },
        calibrate: !args.no_calibrate,
        netns,
        keep_calls: false,
    })?;
    for s in session.sites() {
        eprintln!(
            "pathcost: {} -> {}",
            s.site,
            s.mechanism.map_or_else(|| s.notes.join("; "), |m| m.to_string())
        );
    }
    session
        .collect_until(signals.or_after(args.duration), interval, |snapshot| {
            eprint!("{}", report::table::render(snapshot));
        })
        .await?;
    let (report, _) = session.finish()?;
    write_output(&report::render(&report, args.format)?, args.output.as_deref())?;
    warn_about_losses(&report);
    super::report::export_trace(&report, &args.export)?;
    Ok(())
}

/// Specific, actionable warnings on stderr.
fn warn_about_losses(r: &TraceReport) {
    let l = &r.losses;
    if l.ring_reserve_failures > 0 {
        eprintln!(
            "warning: the ring buffer dropped {} events; per-call percentiles miss them, the in-kernel counts do not (see in_kernel)",
            l.ring_reserve_failures
        );
    }
    if l.unmatched_exits + l.orphaned_frames > 0 {
        eprintln!(
            "warning: {} exits found no entry and {} entries lost their exit (kretprobe misses?); their calls are not in the figures",
            l.unmatched_exits, l.orphaned_frames
        );
    }
    if l.aggregate_overflows > 0 {
        eprintln!(
            "warning: {} calls found the in-kernel aggregate map full and were not counted in the rows; use --collect events or fewer sites",
            l.aggregate_overflows
        );
    }
    if l.depth_overflows > 0 {
        eprintln!("warning: {} calls nested deeper than the probe stack and were not timed", l.depth_overflows);
    }
}
