//! Markdown: the report's sections as tables, with the warnings, for a
//! document or an issue comment.

use std::fmt::Write as _;

use anyhow::Result;

use super::{
    sections::{site_row, sweep_preamble, sweep_sections, SITE_HEADER},
    unsupported, Document, DocumentKind, ExportFormat, Exporter,
};
use crate::{text::thousands, trace::TraceReport};

pub struct Markdown;

/// A cell with the characters that would break a table row escaped.
fn cell(s: &str) -> String {
    let s = s.replace('|', "\\|").replace(['\n', '\r'], " ");
    if s.is_empty() {
        " ".into()
    } else {
        s
    }
}

/// Whether a cell reads as a number ("1,234", "-0.5", "-" for none).
fn numeric(s: &str) -> bool {
    s == "-" || s.replace(',', "").parse::<f64>().is_ok()
}

fn table(out: &mut String, header: &[String], rows: &[Vec<String>]) {
    if rows.is_empty() {
        out.push_str("(none)\n");
        return;
    }
    let line = |cells: &mut dyn Iterator<Item = &String>| {
        let cells: Vec<String> = cells.map(|c| cell(c)).collect();
        format!("| {} |\n", cells.join(" | "))
    };
    out.push_str(&line(&mut header.iter()));
    // Columns of numbers right-aligned, so digits line up; text left.
    let rule: Vec<&str> = (0..header.len())
        .map(|i| if rows.iter().all(|r| r.get(i).is_some_and(|c| numeric(c))) { "--:" } else { "---" })
        .collect();
    let _ = writeln!(out, "| {} |", rule.join(" | "));
    for row in rows {
        out.push_str(&line(&mut row.iter()));
    }
}

impl Exporter for Markdown {
    fn serves(&self, kind: DocumentKind) -> bool {
        matches!(kind, DocumentKind::Sweep | DocumentKind::Trace)
    }

    fn export(&self, document: &Document) -> Result<Vec<u8>> {
        let mut out = String::new();
        match document {
            Document::Sweep { results, analysis } => {
                out.push_str("# pathcost report\n\n");
                for line in sweep_preamble(results) {
                    let _ = writeln!(out, "- {}", cell(&line));
                }
                if !analysis.warnings.is_empty() {
                    out.push_str("\n## Warnings\n\n");
                    for w in &analysis.warnings {
                        let _ = writeln!(out, "- {}", w.message);
                    }
                }
                for s in sweep_sections(results, analysis) {
                    let _ = writeln!(out, "\n## {}\n", upper_first(&s.title));
                    table(&mut out, &s.header, &s.rows);
                    if !s.notes.is_empty() {
                        out.push('\n');
                    }
                    for note in &s.notes {
                        let _ = writeln!(out, "{note}");
                    }
                }
            }
            Document::Trace(report) => trace(&mut out, report),
            _ => return Err(unsupported(ExportFormat::Md, document.kind())),
        }
        Ok(out.into_bytes())
    }
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    c.next().map_or_else(String::new, |f| f.to_uppercase().chain(c).collect())
}

fn trace(out: &mut String, r: &TraceReport) {
    let _ = writeln!(out, "# pathcost trace\n\n- kernel {}, {:.1} s\n", r.kernel, r.duration_s);
    out.push_str("## Probe sites\n\n");
    let sites: Vec<Vec<String>> = r.sites.iter().map(site_row).collect();
    table(out, &SITE_HEADER.map(String::from), &sites);
    out.push_str("\n## Per call (ns; self = minus nested probed calls; corrected = minus probe cost)\n\n");
    let rows: Vec<Vec<String>> = r
        .rows
        .iter()
        .map(|row| {
            let mut name = if row.chain.is_empty() { row.table.clone() } else { format!("{}/{}", row.table, row.chain) };
            if name.is_empty() {
                name = "-".into();
            }
            if !row.verdict.is_empty() {
                name = format!("{name} ({})", row.verdict);
            }
            vec![
                row.site.to_owned(),
                row.hook.to_owned(),
                name,
                thousands(row.inclusive.count),
                format!("{:.0}", row.inclusive.mean_ns),
                thousands(row.inclusive.p50_ns),
                thousands(row.inclusive.p90_ns),
                thousands(row.inclusive.p99_ns),
                thousands(row.inclusive.max_ns),
                thousands(row.exclusive.p50_ns),
                thousands(row.inclusive_corrected.p50_ns),
            ]
        })
        .collect();
    table(
        out,
        &["site", "hook", "table/chain", "count", "mean", "p50", "p90", "p99", "max", "self p50", "corrected p50"]
            .map(String::from),
        &rows,
    );
    let p = &r.per_packet;
    let c = &r.per_packet_corrected;
    let _ = writeln!(
        out,
        "\n## Per packet\n\n{} packets: p50 {} ns, p99 {} ns (corrected: p50 {} ns, p99 {} ns)",
        thousands(p.count),
        thousands(p.p50_ns),
        thousands(p.p99_ns),
        thousands(c.p50_ns),
        thousands(c.p99_ns)
    );
    out.push_str("\n## Probe self-cost\n\n");
    if r.self_cost.is_empty() {
        out.push_str("not calibrated (corrected figures equal raw ones)\n");
    }
    for s in &r.self_cost {
        let _ = writeln!(out, "- {} on {}: {:.0} ns per pair, {:.0} ns inside measured spans", s.mechanism, s.target, s.pair_ns, s.span_ns);
    }
    let l = &r.losses;
    let _ = writeln!(
        out,
        "\n## Losses\n\nunmatched exits {}, depth overflows {}, orphaned frames {}, ring reserve failures {}, negative durations {}, undecodable events {} (entries {}, matched {})",
        l.unmatched_exits, l.depth_overflows, l.orphaned_frames, l.ring_reserve_failures, l.negative_durations, l.undecodable_events, l.entries, l.matched
    );
}
