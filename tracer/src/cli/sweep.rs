//! `pathcost sweep`: cost against the number of services, per mode.

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context as _, Result};
use tracer::{
    analysis,
    report::{check_targets, export_all, Document, DocumentKind, ExportFormat, ExportTarget},
    sweep::{Outcome, SweepOptions},
    synthesis::{program::Mode, traffic::Pace},
    trace::StopSignals,
};

use super::{
    export_target_of, parse_duration,
    probing::MechanismArgs,
    report::print_warnings,
    ruleset::{service_count, RulesetArgs},
    targets, FormatOf,
};

/// Measure cost against the number of services, per kube-proxy mode.
///
/// For each mode and service count: build client, node and backend network
/// namespaces (bound to this process; nothing outside them changes),
/// program kube-proxy-shaped rules for N services into the node, send new
/// connections to random services, "miss" traffic and packets on
/// established flows, and record the netfilter time per packet and per
/// probed call. Modes this kernel cannot run are skipped with the reason.
/// Results are written after every point. `pathcost rules` prints the
/// ruleset a point loads.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Modes, comma-separated: iptables-legacy, iptables-nft, ipvs, nftables.
    #[arg(long, value_delimiter = ',', default_value = "iptables-legacy,iptables-nft,ipvs,nftables")]
    modes: Vec<Mode>,
    /// Service counts, comma-separated (1 to 65,000 each).
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000", value_parser = service_count())]
    services: Vec<u32>,
    #[command(flatten)]
    ruleset: RulesetArgs,
    /// New connections per point and phase, to services drawn uniformly at
    /// random (each point sends them twice: transit-only, then probed; every
    /// one from a fresh source port, 50,000 per point in all).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    connections: u32,
    /// New flows per point to a service address no service owns (probed phase).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    miss: u32,
    /// Established UDP flows per point...
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=5_000))]
    established_flows: u32,
    /// ...and packets sent on each once it is established.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    packets_per_flow: u32,
    #[command(flatten)]
    mechanism: MechanismArgs,
    /// Packets per second at most in each phase (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// Longest a traffic phase may run.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    phase_time: Duration,
    /// Directory for results.json (written after every point).
    #[arg(long, short, default_value = "target/pathcost-sweep")]
    output: PathBuf,
    /// Format of the report printed at the end: the same report, with the
    /// same analysis, as `pathcost report` gives for results.json.
    #[arg(long, value_parser = FormatOf(DocumentKind::Sweep), default_value = "table")]
    format: ExportFormat,
    /// Also write FORMAT (table, md, csv, json, svg) to PATH ("-" is
    /// stdout); repeatable, e.g. --export md=report.md --export svg=cost.svg.
    #[arg(long, value_name = "FORMAT=PATH", value_parser = export_target_of(DocumentKind::Sweep))]
    export: Vec<ExportTarget>,
}

pub async fn run(args: Args) -> Result<()> {
    let mut signals = StopSignals::install()?;
    tracer::capabilities::require_tracing_privileges()?;
    tracer::output::check_directory(&args.output)
        .with_context(|| format!("--output {} cannot hold results.json", args.output.display()))?;
    let targets = targets(args.format, None, args.export);
    check_targets(DocumentKind::Sweep, &targets)?;
    let opts = SweepOptions {
        modes: args.modes,
        services: args.services,
        endpoints: args.ruleset.endpoints,
        protocols: args.ruleset.protocols,
        connections: args.connections,
        miss: args.miss,
        established_flows: args.established_flows,
        packets_per_flow: args.packets_per_flow,
        scheduler: args.ruleset.ipvs_scheduler,
        backend: args.mechanism.backend,
        pace: Pace { rate: args.rate, max_time: args.phase_time },
        seed: args.ruleset.seed,
        output: Some(args.output.clone()),
    };
    let results_file = args.output.join("results.json");
    let results = match tracer::sweep::run(&opts, signals.received(), |line| eprintln!("sweep: {line}")).await? {
        Outcome::Complete(results) => results,
        Outcome::Interrupted { results, signal } => bail!(
            "interrupted by {signal} after {} completed points; they are in {} (marked \"interrupted\": true)",
            results.points.len(),
            results_file.display()
        ),
    };
    eprintln!("sweep: results in {}", results_file.display());
    let analysis = analysis::analyze(&results);
    export_all(&Document::Sweep { results: &results, analysis: &analysis }, &targets)?;
    print_warnings(&analysis.warnings);
    Ok(())
}
