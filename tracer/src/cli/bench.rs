//! `pathcost bench`: what pathcost costs on this kernel, beside bpftrace
//! and the floor.

use std::{fmt::Write as _, path::PathBuf};

use anyhow::Result;
use tracer::{
    bench::{BenchReport, Tracer},
    probes::Backend,
    report::Format,
};

use super::{check_outputs, write_output};

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
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    backend: Backend,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Also write the JSON report here.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

pub async fn run(args: Args) -> Result<()> {
    // Before minutes of measuring, and before the privilege check, as
    // `trace` does: a typo is reported whoever runs it.
    check_outputs(args.output.as_deref(), &[])?;
    tracer::capabilities::require_tracing_privileges()?;
    let r = tracer::bench::run(args.backend, args.services, args.packets).await?;
    let json = serde_json::to_string_pretty(&r)? + "\n";
    if let Some(path) = &args.output {
        write_output(&json, Some(path))?;
    }
    let text = match args.format {
        Format::Json => json,
        Format::Table => table(&r),
    };
    write_output(&text, None)
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

fn table(r: &BenchReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pathcost bench: kernel {}, {} services, {} new connections per tracer in {} rotated rounds, {}, {:.1} probed calls per packet",
        r.kernel, r.services, r.packets_per_phase, r.rounds, r.backend, r.calls_per_packet
    );
    let _ = writeln!(
        out,
        "nothing attached: transit p50 {:.0} ns per packet ({:.1} probed calls inside it); sender's wall time {:.0} ns per new connection (median of rounds, first {:.0}, last {:.0})",
        r.detached_transit_p50_ns,
        r.transit_calls_per_packet,
        r.detached_ns,
        r.detached_first_last_ns.0,
        r.detached_first_last_ns.1
    );
    let _ = writeln!(
        out,
        "\n{:<21} {:>12} {:>14} {:>10} {:>10} {:>8} {:>12} {:>11} {:>10}",
        "tracer", "transit p50", "added/packet", "added/call", "x bpftrace", "x floor", "in programs", "wall/packet", "wall added"
    );
    for t in &r.tracers {
        let _ = writeln!(
            out,
            "{:<21} {:>12.0} {:>14.0} {:>10.0} {:>10} {:>8} {:>12} {:>11.0} {:>10.0}",
            t.tracer.to_string(),
            t.transit_p50_ns,
            t.added_transit_ns,
            t.added_ns_per_transit_call,
            opt(t.ratio_to_bpftrace, 2),
            opt(t.floor_multiple, 2),
            opt(t.program_run_ns_per_call, 0),
            t.attached_ns,
            t.added_ns_per_packet,
        );
    }
    let _ = writeln!(
        out,
        "(ns; added: median over rounds of the transit p50 over the same round's detached one, per packet and per probed call inside the transit; \
         in programs: the tracer's own BPF program run time per call, from the kernel's run-time statistics; wall: the sender's time per new connection, noisy on a shared machine)"
    );
    for c in &r.self_cost {
        let _ = writeln!(
            out,
            "getppid calibration ({} on {}): {:.0} ns per pair, {:.0} ns inside measured spans",
            c.mechanism, c.target, c.pair_ns, c.span_ns
        );
    }
    if let Some(pair) = r.calibrated_pair_ns_per_call {
        let added = |t: Tracer| r.tracers.iter().find(|c| c.tracer == t).map(|c| c.added_ns_per_transit_call);
        let _ = writeln!(
            out,
            "corrections: the getppid pairs, weighted by the sites' calls, remove {pair:.0} ns per probed call; measured in the path, pathcost adds {} (events) and {} (aggregating), the floor {}",
            opt(added(Tracer::PathcostEvents), 0),
            opt(added(Tracer::PathcostAggregate), 0),
            opt(added(Tracer::Floor), 0),
        );
    }
    // What each correction removes per call against what was measured to
    // be added in the path: the rest is what it would leave in the
    // corrected figures.
    for t in r.tracers.iter().filter(|t| t.path_correction_ns_per_call.is_some()) {
        let added = t.added_ns_per_transit_call;
        let share = |c: f64| if added > 0.0 { format!("{:.0}%", 100.0 * c / added) } else { "-".to_owned() };
        let path = t.path_correction_ns_per_call.unwrap_or_default();
        let _ = writeln!(
            out,
            "correction per call, {}: measured added {added:.0} ns; in the path (floor + programs above the floor's) {path:.0} ns = {}; getppid pair {} = {}",
            t.tracer,
            share(path),
            opt(r.calibrated_pair_ns_per_call, 0),
            r.calibrated_pair_ns_per_call.map_or_else(|| "-".to_owned(), share),
        );
    }
    for p in &r.program_run {
        let _ = writeln!(out, "program run time: {} and its exit, {:.0} ns per call over {} calls", p.entry, p.ns_per_call, p.calls);
    }
    let _ = writeln!(out, "\nflood (as fast as the client sends):");
    for f in &r.flood {
        let lost = f.lost.map_or_else(|| "not counted".to_owned(), |l| l.to_string());
        let _ = writeln!(
            out,
            "  {:<21} {} packets in {:.2} s: {:.0} calls/s recorded ({} calls), lost {}",
            f.tracer.to_string(),
            f.packets,
            f.seconds,
            f.calls_per_second,
            f.calls,
            lost
        );
    }
    out
}
