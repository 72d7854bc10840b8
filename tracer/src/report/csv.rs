//! CSV (RFC 4180: comma-separated, CRLF line ends, fields with a comma,
//! quote or line break quoted and inner quotes doubled). A sweep gives one
//! row per point with its main figures; a trace one row per site row.
//! Numbers are plain base units (ns, ms) for spreadsheets; a figure the
//! file does not have is an empty field.

use anyhow::Result;

use super::{unsupported, Document, DocumentKind, ExportFormat, Exporter};
use crate::{results::Results, statistics::Summary, trace::TraceReport};

pub struct Csv;

/// Quotes a field when RFC 4180 requires it.
pub fn field(s: &str) -> String {
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn record(out: &mut String, fields: &[String]) {
    let fields: Vec<String> = fields.iter().map(|f| field(f)).collect();
    out.push_str(&fields.join(","));
    out.push_str("\r\n");
}

impl Exporter for Csv {
    fn serves(&self, kind: DocumentKind) -> bool {
        matches!(kind, DocumentKind::Sweep | DocumentKind::Trace)
    }

    fn export(&self, document: &Document) -> Result<Vec<u8>> {
        let mut out = String::new();
        match document {
            Document::Sweep { results, .. } => sweep(&mut out, results),
            Document::Trace(report) => trace(&mut out, report),
            _ => return Err(unsupported(ExportFormat::Csv, document.kind())),
        }
        Ok(out.into_bytes())
    }
}

const SWEEP_HEADER: &[&str] = &[
    "mode", "services", "endpoints", "service_ports", "backend", "kernel", "program_ms",
    "new_connections", "new_mean_ns", "new_p50_ns", "new_p90_ns", "new_p99_ns", "new_max_ns",
    "new_raw_p50_ns", "new_raw_p99_ns",
    "established_packets", "established_p50_ns", "established_p99_ns", "established_raw_p50_ns",
    "miss_packets", "miss_p50_ns", "miss_p99_ns", "miss_raw_p50_ns",
    "entries", "matched", "unmatched_exits", "depth_overflows", "orphaned_frames",
    "ring_reserve_failures", "negative_durations", "undecodable_events",
    "brackets_opened", "brackets_closed", "brackets_unclosed", "max_probe_pair_ns",
    "transit_new_connections", "transit_new_p50_ns", "transit_new_p90_ns", "transit_new_p99_ns",
    "transit_established_p50_ns", "lookup", "lookup_mechanism", "lookup_p50_ns", "lookup_p90_ns", "lookup_p99_ns",
    "transits_opened", "transits_closed", "transits_unclosed",
];

fn sweep(out: &mut String, r: &Results) {
    record(out, &SWEEP_HEADER.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    let raw = |s: Option<&Summary>, f: fn(&Summary) -> u64| s.map_or(String::new(), |s| f(s).to_string());
    for p in &r.points {
        let (n, e, m, l) = (&p.per_new_connection, &p.per_established_packet, &p.per_miss_packet, &p.losses);
        let (t, lookup) = (&p.transit_new_connection, p.lookup_new_connection.as_ref());
        let pair = p.self_cost.iter().map(|c| c.pair_ns).fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.max(x))));
        record(
            out,
            &[
                p.mode.to_string(),
                p.services.to_string(),
                p.endpoints.to_string(),
                p.service_ports.to_string(),
                p.backend.clone(),
                p.kernel.clone(),
                format!("{:.3}", p.program_ms),
                n.count.to_string(),
                format!("{:.1}", n.mean_ns),
                n.p50_ns.to_string(),
                n.p90_ns.to_string(),
                n.p99_ns.to_string(),
                n.max_ns.to_string(),
                raw(p.per_new_connection_raw.as_ref(), |s| s.p50_ns),
                raw(p.per_new_connection_raw.as_ref(), |s| s.p99_ns),
                e.count.to_string(),
                e.p50_ns.to_string(),
                e.p99_ns.to_string(),
                raw(p.per_established_packet_raw.as_ref(), |s| s.p50_ns),
                m.count.to_string(),
                m.p50_ns.to_string(),
                m.p99_ns.to_string(),
                raw(p.per_miss_packet_raw.as_ref(), |s| s.p50_ns),
                l.entries.to_string(),
                l.matched.to_string(),
                l.unmatched_exits.to_string(),
                l.depth_overflows.to_string(),
                l.orphaned_frames.to_string(),
                l.ring_reserve_failures.to_string(),
                l.negative_durations.to_string(),
                l.undecodable_events.to_string(),
                l.brackets_opened.to_string(),
                l.brackets_closed.to_string(),
                l.brackets_unclosed.to_string(),
                pair.map_or(String::new(), |x| format!("{x:.1}")),
                t.count.to_string(),
                t.p50_ns.to_string(),
                t.p90_ns.to_string(),
                t.p99_ns.to_string(),
                p.transit_established_packet.p50_ns.to_string(),
                lookup.map_or(String::new(), |l| l.what.clone()),
                lookup.map_or(String::new(), |l| l.mechanism.to_string()),
                raw(lookup.map(|l| &l.summary), |s| s.p50_ns),
                raw(lookup.map(|l| &l.summary), |s| s.p90_ns),
                raw(lookup.map(|l| &l.summary), |s| s.p99_ns),
                l.transits_opened.to_string(),
                l.transits_closed.to_string(),
                l.transits_unclosed.to_string(),
            ],
        );
    }
}

fn trace(out: &mut String, r: &TraceReport) {
    record(
        out,
        &[
            "site", "hook", "table", "chain", "verdict", "count", "mean_ns", "p50_ns", "p90_ns", "p99_ns", "max_ns",
            "self_p50_ns", "corrected_p50_ns", "self_corrected_p50_ns",
        ]
        .map(String::from),
    );
    for row in &r.rows {
        let i = &row.inclusive;
        record(
            out,
            &[
                row.site.to_owned(),
                row.hook.to_owned(),
                row.table.clone(),
                row.chain.clone(),
                row.verdict.clone(),
                i.count.to_string(),
                format!("{:.1}", i.mean_ns),
                i.p50_ns.to_string(),
                i.p90_ns.to_string(),
                i.p99_ns.to_string(),
                i.max_ns.to_string(),
                row.exclusive.p50_ns.to_string(),
                row.inclusive_corrected.p50_ns.to_string(),
                row.exclusive_corrected.p50_ns.to_string(),
            ],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_as_rfc_4180_says() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field(""), "");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
        let mut out = String::new();
        record(&mut out, &["fentry+kprobe".into(), "6.12, custom".into()]);
        assert_eq!(out, "fentry+kprobe,\"6.12, custom\"\r\n");
    }
}
