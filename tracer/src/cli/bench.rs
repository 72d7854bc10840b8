//! `pathcost bench`: what pathcost costs on this kernel, beside bpftrace
//! and the floor.

use std::path::PathBuf;

use anyhow::Result;
use tracer::report::{check_targets, export_all, Document, DocumentKind, ExportFormat, ExportTarget};

use super::{export_target_of, probing::MechanismArgs, targets, FormatOf};

/// Measure pathcost's own overhead on this kernel, beside bpftrace.
///
/// In private namespaces with kube-proxy-shaped iptables rules, the same
/// new connections are timed with nothing attached, the floor (empty
/// entry/exit programs on the same functions), pathcost sending events,
/// pathcost aggregating in the kernel, bpftrace (kprobe/kretprobe pairs
/// and hist()), and nothing attached again: added ns per packet and per
/// probed call, ratios to bpftrace and multiples of the floor, the
/// programs' own run time per call. Then a flood per recording tracer:
/// calls per second recorded and every call lost. Under emulation trust
/// the ratios.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Services programmed in the node namespace.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    services: u32,
    /// New connections per timed phase.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(10..=12_000))]
    packets: u32,
    #[command(flatten)]
    mechanism: MechanismArgs,
    /// Format of the report on stdout.
    #[arg(long, value_parser = FormatOf(DocumentKind::Bench), default_value = "table")]
    format: ExportFormat,
    /// Also write the JSON report here (the same as --export json=FILE).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Also write FORMAT (table, json) to PATH ("-" is stdout); repeatable.
    #[arg(long, value_name = "FORMAT=PATH", value_parser = export_target_of(DocumentKind::Bench))]
    export: Vec<ExportTarget>,
}

pub async fn run(args: Args) -> Result<()> {
    // The JSON file first, as before --export existed, then stdout.
    let json = args.output.map(|path| ExportTarget { format: ExportFormat::Json, path });
    let targets: Vec<ExportTarget> = json.into_iter().chain(targets(args.format, None, args.export)).collect();
    // Before minutes of measuring, and before the privilege check, as
    // `trace` does: a typo is reported whoever runs it.
    check_targets(DocumentKind::Bench, &targets)?;
    tracer::capabilities::require_tracing_privileges()?;
    let report = tracer::bench::run(args.mechanism.backend, args.services, args.packets).await?;
    export_all(&Document::Bench(&report), &targets)
}
