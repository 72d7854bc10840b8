//! Plain text for a terminal: every document as aligned columns and
//! lines. Warnings are not part of it; the command prints them on stderr,
//! where a terminal user sees them and a pipe does not carry them.

use std::fmt::Write as _;

use anyhow::Result;

use super::{
    sections::{site_row, sweep_preamble, sweep_sections, SITE_HEADER},
    Document, DocumentKind, Exporter,
};
use crate::{
    analysis::{advise, Analysis},
    bench::{BenchReport, Tracer},
    results::Results,
    synthesis::program::Step,
    text::{columns, fixed_or_dash},
    trace::TraceReport,
};

pub struct Table;

impl Exporter for Table {
    fn serves(&self, _: DocumentKind) -> bool {
        true
    }

    fn export(&self, document: &Document) -> Result<Vec<u8>> {
        Ok(match document {
            Document::Sweep { results, analysis } => sweep(results, analysis),
            Document::Trace(report) => trace(report),
            Document::Detection(detection) => crate::detection::table::render(detection),
            Document::Bench(report) => bench(report),
            Document::Advice { results, analysis, source, node } => advise::render(results, analysis, source, node)?,
            Document::Rules { invocation, steps } => rules(invocation, steps),
        }
        .into_bytes())
    }
}

/// A sweep's report: its sections as columns under their titles.
fn sweep(results: &Results, analysis: &Analysis) -> String {
    let mut out = String::from("pathcost report: ");
    for line in sweep_preamble(results) {
        let _ = writeln!(out, "{line}");
    }
    for s in sweep_sections(results, analysis) {
        let _ = writeln!(out, "\n{}:", s.title);
        if s.rows.is_empty() {
            out.push_str("  (none)\n");
        } else {
            let header: Vec<&str> = s.header.iter().map(String::as_str).collect();
            out.push_str(&columns(&header, &s.rows));
        }
        for note in &s.notes {
            let _ = writeln!(out, "  {note}");
        }
    }
    out
}

/// A trace report: also the live summary `trace` prints every --interval.
pub fn trace(r: &TraceReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "pathcost trace: kernel {}, {:.1} s", r.kernel, r.duration_s);
    let _ = writeln!(out, "\nprobe sites:");
    let site_rows: Vec<Vec<String>> = r.sites.iter().map(site_row).collect();
    out.push_str(&columns(&SITE_HEADER, &site_rows));

    let _ = writeln!(out, "\nper call (ns; self = minus nested probed calls; corr = minus probe cost):");
    let _ = writeln!(out, "  collected by {}", r.collection.describe());
    let rows: Vec<Vec<String>> = r
        .rows
        .iter()
        .map(|row| {
            let name = match (row.chain.is_empty(), row.verdict.is_empty()) {
                (_, false) => format!("verdict {}", row.verdict),
                (true, true) => row.table.clone(),
                (false, true) => format!("{}/{}", row.table, row.chain),
            };
            vec![
                row.site.to_owned(),
                row.hook.to_owned(),
                if name.is_empty() { "-".into() } else { name },
                row.inclusive.count.to_string(),
                format!("{:.0}", row.inclusive.mean_ns),
                row.inclusive.p50_ns.to_string(),
                row.inclusive.p90_ns.to_string(),
                row.inclusive.p99_ns.to_string(),
                row.inclusive.max_ns.to_string(),
                row.exclusive.p50_ns.to_string(),
                row.inclusive_corrected.p50_ns.to_string(),
                row.exclusive_corrected.p50_ns.to_string(),
            ]
        })
        .collect();
    if rows.is_empty() {
        out.push_str("  (no calls observed)\n");
    } else {
        out.push_str(&columns(
            &[
                "site", "hook", "table/chain", "count", "mean", "p50", "p90", "p99", "max",
                "self p50", "corr p50", "self corr p50",
            ],
            &rows,
        ));
    }
    if r.per_packet.count > 0 {
        let p = &r.per_packet;
        let _ = writeln!(
            out,
            "\nper packet (all netfilter hooks it traversed): {} packets, mean {:.0} ns, p50 {}, p90 {}, p99 {}, max {}",
            p.count, p.mean_ns, p.p50_ns, p.p90_ns, p.p99_ns, p.max_ns
        );
        let c = &r.per_packet_corrected;
        let _ = writeln!(
            out,
            "  corrected for probe cost: mean {:.0} ns, p50 {}, p90 {}, p99 {}, max {}",
            c.mean_ns, c.p50_ns, c.p90_ns, c.p99_ns, c.max_ns
        );
    }
    if r.self_cost.is_empty() {
        let _ = writeln!(out, "\nprobe self-cost: not calibrated (corrected figures are raw)");
    }
    for c in &r.self_cost {
        let _ = writeln!(
            out,
            "\nprobe self-cost ({} on {}, {} calls): {:.0} ns per entry/exit pair, {:.0} ns of it inside measured spans",
            c.mechanism, c.target, c.calls, c.pair_ns, c.span_ns
        );
    }
    for p in &r.program_run {
        let _ = writeln!(
            out,
            "program run time ({} and its exit, {} calls): {:.0} ns per call inside the programs (BPF run-time statistics)",
            p.entry, p.calls, p.ns_per_call
        );
    }
    let l = &r.losses;
    let _ = writeln!(
        out,
        "losses: unmatched exits {}, depth overflows {}, orphaned frames {}, ring reserve failures {}, negative durations {}, undecodable events {}, BPF recursion misses {} (entries {}, matched {})",
        l.unmatched_exits,
        l.depth_overflows,
        l.orphaned_frames,
        l.ring_reserve_failures,
        l.negative_durations,
        l.undecodable_events,
        l.bpf_recursion_misses,
        l.entries,
        l.matched
    );
    if l.transits_opened > 0 {
        let _ = writeln!(
            out,
            "transits: opened {}, closed {}, never closed {}",
            l.transits_opened, l.transits_closed, l.transits_unclosed
        );
    }
    if l.brackets_opened > 0 {
        let _ = writeln!(
            out,
            "brackets: opened {}, closed {}, never closed {}",
            l.brackets_opened, l.brackets_closed, l.brackets_unclosed
        );
    }
    out
}

/// A bench run: the tracers side by side, then the flood.
fn bench(r: &BenchReport) -> String {
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
            fixed_or_dash(t.ratio_to_bpftrace, 2),
            fixed_or_dash(t.floor_multiple, 2),
            fixed_or_dash(t.program_run_ns_per_call, 0),
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
            fixed_or_dash(added(Tracer::PathcostEvents), 0),
            fixed_or_dash(added(Tracer::PathcostAggregate), 0),
            fixed_or_dash(added(Tracer::Floor), 0),
        );
    }
    // What each correction removes per call against what was measured to
    // be added in the path: the rest is what it would leave in the
    // corrected figures.
    for t in r.tracers.iter() {
        let Some(path) = t.path_correction_ns_per_call else { continue };
        let added = t.added_ns_per_transit_call;
        let share = |c: f64| if added > 0.0 { format!("{:.0}%", 100.0 * c / added) } else { "-".to_owned() };
        let _ = writeln!(
            out,
            "correction per call, {}: measured added {added:.0} ns; in the path (floor + programs above the floor's) {path:.0} ns = {}; getppid pair {} = {}",
            t.tracer,
            share(path),
            fixed_or_dash(r.calibrated_pair_ns_per_call, 0),
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

/// The point's command line, what follows, then each step's command line
/// as a comment and its input verbatim.
fn rules(invocation: &str, steps: &[Step]) -> String {
    let mut out = format!(
        "# {invocation}\n\
         # What `pathcost sweep` feeds to the node namespace for this point, in order:\n\
         # each input follows a line naming the command it goes to on stdin.\n"
    );
    for step in steps {
        let _ = write!(out, "\n# {}\n", step.command_line());
        out.push_str(step.input());
    }
    out
}
