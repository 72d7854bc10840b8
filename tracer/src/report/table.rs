//! Plain-text rendering for a terminal: a trace report, and the table a
//! sweep ends with.

use std::fmt::Write as _;

use super::TraceReport;
use crate::{results::Results, text::columns};

pub fn render(r: &TraceReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "pathcost trace: kernel {}, {:.1} s", r.kernel, r.duration_s);
    let _ = writeln!(out, "\nprobe sites:");
    let site_rows: Vec<Vec<String>> = r
        .sites
        .iter()
        .map(|s| {
            vec![
                s.site.to_owned(),
                s.symbol.clone().unwrap_or_else(|| "-".into()),
                s.module.clone().unwrap_or_else(|| "vmlinux".into()),
                s.mechanism.map_or("not attached".into(), |m| m.to_string()),
                s.notes.join("; "),
            ]
        })
        .collect();
    out.push_str(&columns(&["site", "symbol", "module", "mechanism", "notes"], &site_rows));

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

/// The sweep's closing table: one line per (mode, N).
pub fn sweep_table(r: &Results) -> String {
    let mut out = format!("pathcost sweep: kernel {}, {} points\n", r.kernel, r.points.len());
    for s in &r.skipped {
        let _ = writeln!(out, "skipped {}: {}", s.mode, s.reason);
    }
    let rows: Vec<Vec<String>> = r
        .points
        .iter()
        .map(|p| {
            let l = &p.losses;
            let lookup = p.lookup_new_connection.as_ref();
            vec![
                p.mode.to_string(),
                p.services.to_string(),
                p.backend.clone(),
                format!("{:.0}", p.program_ms),
                p.transit_new_connection.count.to_string(),
                p.transit_new_connection.p50_ns.to_string(),
                p.transit_new_connection.p99_ns.to_string(),
                p.transit_established_packet.p50_ns.to_string(),
                lookup.map_or("-".to_owned(), |l| l.summary.p50_ns.to_string()),
                p.per_new_connection.p50_ns.to_string(),
                (l.unmatched_exits + l.orphaned_frames + l.depth_overflows + l.ring_reserve_failures + l.undecodable_events)
                    .to_string(),
            ]
        })
        .collect();
    out.push_str(&columns(
        &[
            "mode", "services", "backend", "program ms", "new conns", "transit p50 ns", "transit p99 ns",
            "established transit p50 ns", "lookup p50 ns", "netfilter hooks p50 ns", "lost events",
        ],
        &rows,
    ));
    out.push_str(
        "transit: a forwarded packet from arrival on the client-facing device to departure on the backend-facing one (tracepoints only; compare modes by it). \
         lookup: the call that finds the service (raw). netfilter hooks: the nf_hook_slow union, corrected (IPVS includes its forwarding).\n",
    );
    out
}
