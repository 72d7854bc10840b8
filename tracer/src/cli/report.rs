//! `pathcost report`: analyse a sweep's results file and export it.

use std::{io::IsTerminal as _, path::PathBuf};

use anyhow::Result;
use tracer::{
    analysis::{self, Warning},
    report::{check_targets, export_all, Document, DocumentKind, ExportFormat, ExportTarget},
    results::Results,
};

use super::{export_target_of, targets, FormatOf};

/// Analyse a sweep's results file and export it.
///
/// Per mode: a least-squares line of cost per new connection against N
/// (N = services; p50 and p99, corrected for the probes' own cost), the
/// same for established and miss packets and for the time to program the
/// rules; where the modes' lines cross; the IPVS scheduler's own cost; the
/// probes' self-cost; every loss counter. Warnings (too few points, high
/// variance, lost events, emulated machine, coarse backend) go to stderr.
///
/// Formats: table (terminal), md (Markdown, with the warnings), csv (one
/// row per point, RFC 4180), json (the results plus the analysis), svg
/// (one file, two charts stacked: p50 and p99 per new connection against N
/// on a log axis, one colour per mode; and the programming time against N).
///
/// The main output is --format to --output; each --export FORMAT=PATH adds
/// one more, e.g. `pathcost report results.json --export md=report.md
/// --export svg=cost.svg`. A PATH of "-" is stdout. Every output is written
/// as soon as it is ready.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The results.json a sweep wrote.
    #[arg(value_name = "RESULTS.json")]
    results: PathBuf,
    /// Format of the main output.
    #[arg(long, short, value_parser = FormatOf(DocumentKind::Sweep), default_value = "table")]
    format: ExportFormat,
    /// Where the main output goes ("-" is stdout).
    #[arg(long, short, default_value = "-")]
    output: PathBuf,
    /// Also write FORMAT (table, md, csv, json, svg) to PATH; repeatable.
    #[arg(long, value_name = "FORMAT=PATH", value_parser = export_target_of(DocumentKind::Sweep))]
    export: Vec<ExportTarget>,
}

pub async fn run(args: Args) -> Result<()> {
    let targets = targets(args.format, Some(args.output), args.export);
    // Before anything is written: outputs go out one by one, so a bad last
    // one found only when its turn came would leave the earlier ones
    // written and the run failed.
    check_targets(DocumentKind::Sweep, &targets)?;
    let results = Results::load(&args.results)?;
    let analysis = analysis::analyze(&results);
    export_all(&Document::Sweep { results: &results, analysis: &analysis }, &targets)?;
    print_warnings(&analysis.warnings);
    Ok(())
}

/// Prints warnings on stderr, "warning:" in yellow only on a terminal and
/// never under NO_COLOR (https://no-color.org).
pub fn print_warnings(warnings: &[Warning]) {
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let prefix = if colour { "\x1b[33mwarning:\x1b[0m" } else { "warning:" };
    for w in warnings {
        eprintln!("{prefix} {}", w.message);
    }
}
