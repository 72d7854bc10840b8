//! `pathcost trace`: attach to the live kernel and time real traffic.

use std::{path::PathBuf, time::Duration};

use anyhow::Result;
use tracer::{
    report::{self, check_targets, Document, DocumentKind, ExportFormat, ExportTarget},
    trace::{Collection, Session, SessionOptions, StopSignals, TraceReport},
};

use super::{
    export_target_of,
    probing::{announce, PacketFilterArgs, ProbeArgs},
    parse_duration, targets, FormatOf,
};

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
    #[command(flatten)]
    probes: ProbeArgs,
    /// Print a live summary this often (e.g. 5s); 0 disables it.
    #[arg(long, short, value_parser = parse_duration, default_value = "5s")]
    interval: Duration,
    /// Format of the final report.
    #[arg(long, value_parser = FormatOf(DocumentKind::Trace), default_value = "table")]
    format: ExportFormat,
    /// Write the final report here instead of stdout ("-" is stdout).
    #[arg(long, short)]
    output: Option<PathBuf>,
    #[command(flatten)]
    filter: PacketFilterArgs,
    /// Also write FORMAT (table, md, csv, json) to PATH ("-" is
    /// stdout); repeatable, e.g. --export md=trace.md --export csv=calls.csv.
    #[arg(long, value_name = "FORMAT=PATH", value_parser = export_target_of(DocumentKind::Trace))]
    export: Vec<ExportTarget>,
}

/// Runs up to this long collect events by default; longer ones aggregate.
const LONG_RUN: Duration = Duration::from_secs(60);

pub async fn run(args: Args) -> Result<()> {
    // Caught from here on: a signal during attach or calibration still
    // ends in a report (of what was measured, possibly nothing).
    let mut signals = StopSignals::install()?;
    let targets = targets(args.format, args.output, args.export);
    check_targets(DocumentKind::Trace, &targets)?;
    let interval = (!args.interval.is_zero()).then_some(args.interval);
    let collection =
        if args.duration.is_some_and(|d| d <= LONG_RUN) { Collection::Events } else { Collection::Kernel };
    let (request, netns) = args.probes.attach_request(&args.filter, collection)?;
    let mut session = Session::start(&SessionOptions {
        request,
        calibrate: !args.probes.no_calibrate,
        netns,
        keep_calls: false,
    })?;
    announce(session.sites());
    session
        .collect_until(signals.or_after(args.duration), interval, |snapshot| {
            eprint!("{}", report::table::trace(snapshot));
        })
        .await?;
    let (report, _) = session.finish()?;
    report::export_all(&Document::Trace(&report), &targets)?;
    warn_about_losses(&report);
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
