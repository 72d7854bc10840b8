//! Exporters: one trait, one module per format. A sweep's results (with
//! their analysis) or a trace report go in, bytes come out; writing them is
//! the caller's, through [`write_to`] (`-` is stdout). Several targets can
//! be given at once, and each is written as soon as it is produced, so a
//! later failure loses nothing already written.

pub mod csv;
pub mod json;
pub mod markdown;
pub mod svg;
pub mod table;

use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
};

use anyhow::{Context as _, Result};

use crate::{
    analysis::{Analysis, CrossoverStatus, LinearFit},
    report::TraceReport,
    results::{Point, Results},
    synthesis::program::Mode,
    text::{decimal, thousands},
};

/// What is exported.
#[derive(Clone, Copy, Debug)]
pub enum Document<'a> {
    /// A sweep's results and what the analysis made of them.
    Sweep { results: &'a Results, analysis: &'a Analysis },
    /// A live trace's report.
    Trace(&'a TraceReport),
}

/// Renders a document in one format.
pub trait Exporter {
    fn export(&self, document: &Document) -> Result<Vec<u8>>;
}

/// The formats, as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Columns for a terminal.
    Table,
    /// Markdown tables, with the warnings.
    #[value(alias = "markdown")]
    Md,
    /// One row per point (sweep) or per site row (trace), RFC 4180.
    Csv,
    /// The results (or trace report) plus the analysis.
    Json,
    /// Plots: cost per new connection and programming time against N
    /// (sweep only).
    Svg,
}

impl ExportFormat {
    pub fn exporter(self) -> &'static dyn Exporter {
        match self {
            ExportFormat::Table => &table::Table,
            ExportFormat::Md => &markdown::Markdown,
            ExportFormat::Csv => &csv::Csv,
            ExportFormat::Json => &json::Json,
            ExportFormat::Svg => &svg::Svg,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Table => "table",
            ExportFormat::Md => "md",
            ExportFormat::Csv => "csv",
            ExportFormat::Json => "json",
            ExportFormat::Svg => "svg",
        }
    }
}

impl fmt::Display for ExportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExportFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        <ExportFormat as clap::ValueEnum>::from_str(s, true)
            .map_err(|_| format!("unknown format '{s}' (use table, md, csv, json or svg)"))
    }
}

/// `FORMAT=PATH` from `--export`; PATH `-` is stdout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportTarget {
    pub format: ExportFormat,
    pub path: PathBuf,
}

impl FromStr for ExportTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (format, path) = s
            .split_once('=')
            .ok_or_else(|| format!("'{s}' is not FORMAT=PATH (e.g. md=report.md, svg=cost.svg, csv=-)"))?;
        if path.is_empty() {
            return Err(format!("'{s}' names no file (use {format}=- for stdout)"));
        }
        Ok(ExportTarget { format: format.parse()?, path: PathBuf::from(path) })
    }
}

impl fmt::Display for ExportTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.format, self.path.display())
    }
}

pub use crate::output::is_stdout;

/// Writes `bytes` to `path` atomically, creating its directory, or to
/// stdout for `-`.
pub fn write_to(bytes: &[u8], path: &Path) -> Result<()> {
    crate::output::write_file(path, bytes)
}

/// Checks every target can be written, before the work that feeds them.
pub fn check_targets(targets: &[ExportTarget]) -> Result<()> {
    targets.iter().try_for_each(|t| crate::output::check_file(&t.path))
}

/// Renders and writes every target in order, each as soon as it is ready.
pub fn export_all(document: &Document, targets: &[ExportTarget]) -> Result<()> {
    // Checked first: a clash found after writing would leave one output
    // silently overwritten by another.
    for (i, a) in targets.iter().enumerate() {
        if let Some(b) = targets[i + 1..].iter().find(|b| !is_stdout(&b.path) && b.path == a.path) {
            anyhow::bail!("{} and {} would both write {}: give each output its own file", a.format, b.format, a.path.display());
        }
    }
    for t in targets {
        let bytes = t.format.exporter().export(document).with_context(|| format!("exporting {}", t.format))?;
        write_to(&bytes, &t.path)?;
    }
    Ok(())
}

/// The sweep exporters' shared answer for a trace they cannot draw.
fn trace_unsupported(format: ExportFormat) -> anyhow::Error {
    anyhow::anyhow!(
        "the {format} format needs a sweep (cost against the number of services); a trace exports as table, md, csv or json"
    )
}

/// A titled block of columns: what table and Markdown both render.
pub(crate) struct Section {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Lines after the block.
    pub notes: Vec<String>,
}

/// The opening lines: kernel, tool, settings and skipped modes.
pub(crate) fn sweep_preamble(r: &Results) -> Vec<String> {
    let s = &r.settings;
    let services: Vec<String> = s.services.iter().map(|&n| thousands(u64::from(n))).collect();
    let mut lines = vec![
        format!("kernel {}, {}, {} points", r.kernel, r.tool, r.points.len()),
        format!(
            "settings: services {}; {} endpoints each; {}; {} new connections, {} miss, {} established flows × {} packets per point; IPVS scheduler {}; backend {}; rate {}; seed {}",
            services.join(", "),
            s.endpoints,
            s.protocols.join("+"),
            s.connections,
            s.miss,
            s.established_flows,
            s.packets_per_flow,
            s.ipvs_scheduler,
            s.backend,
            if s.rate == 0 { "unlimited".to_owned() } else { format!("{}/s", s.rate) },
            s.seed
        ),
    ];
    for k in &r.skipped {
        lines.push(format!("skipped {}: {}", k.mode, k.reason));
    }
    lines
}

/// The sections of a sweep report, in reading order.
pub(crate) fn sweep_sections(r: &Results, a: &Analysis) -> Vec<Section> {
    let mut sections = Vec::new();
    let opt = |s: Option<&crate::statistics::Summary>| s.map_or("-".to_owned(), |s| thousands(s.p50_ns));
    let lost = |l: &crate::collection::Losses| {
        l.unmatched_exits + l.depth_overflows + l.orphaned_frames + l.ring_reserve_failures + l.negative_durations + l.undecodable_events
    };
    let mut points: Vec<&Point> = r.points.iter().collect();
    points.sort_by_key(|p| (Mode::ALL.iter().position(|m| *m == p.mode), p.services));
    if a.basis == crate::analysis::Basis::Transit {
        sections.push(Section {
            title: "per point: transit through the node (tracepoints only, the same span in every mode) and the lookup (ns)".into(),
            header: [
                "mode", "services", "new conns", "transit p50", "transit p90", "transit p99", "established transit p50",
                "lookup", "lookup p50", "lookup p90", "lookup p99",
            ]
            .map(String::from)
            .to_vec(),
            rows: points
                .iter()
                .map(|p| {
                    let t = &p.transit_new_connection;
                    let l = p.lookup_new_connection.as_ref();
                    let lookup = |f: fn(&crate::statistics::Summary) -> u64| l.map_or("-".to_owned(), |l| thousands(f(&l.summary)));
                    vec![
                        p.mode.to_string(),
                        thousands(u64::from(p.services)),
                        thousands(t.count),
                        thousands(t.p50_ns),
                        thousands(t.p90_ns),
                        thousands(t.p99_ns),
                        thousands(p.transit_established_packet.p50_ns),
                        l.map_or("- (the bracket cannot isolate it)".to_owned(), |l| format!("{} ({})", l.what, l.mechanism)),
                        lookup(|s| s.p50_ns),
                        lookup(|s| s.p90_ns),
                        lookup(|s| s.p99_ns),
                    ]
                })
                .collect(),
            notes: vec![
                "transit: net:netif_receive_skb on the client-facing device to net:net_dev_start_xmit of the same skb on the backend-facing device, in a phase with nothing else attached".into(),
                "lookup: the call that finds the service, raw, from the probed phase; IPVS's excludes the transmit (ip_vs_nat_xmit) it runs inside its hook".into(),
            ],
        });
    }
    sections.push(Section {
        title: "netfilter hook time per packet (nf_hook_slow union, corrected for the probes' own cost, or the PREROUTING bracket with --backend bracket; raw = as measured; IPVS includes the forwarding it does inside its hook, so compare modes by transit)".into(),
        header: [
            "mode", "services", "backend", "new conns", "new p50", "new p90", "new p99", "new max", "raw p50",
            "established p50", "miss p50", "programming ms", "lost events",
        ]
        .map(String::from)
        .to_vec(),
        rows: points
            .iter()
            .map(|p| {
                let n = &p.per_new_connection;
                vec![
                    p.mode.to_string(),
                    thousands(u64::from(p.services)),
                    p.backend.clone(),
                    thousands(n.count),
                    thousands(n.p50_ns),
                    thousands(n.p90_ns),
                    thousands(n.p99_ns),
                    thousands(n.max_ns),
                    opt(p.per_new_connection_raw.as_ref()),
                    thousands(p.per_established_packet.p50_ns),
                    thousands(p.per_miss_packet.p50_ns),
                    decimal(p.program_ms),
                    thousands(lost(&p.losses)),
                ]
            })
            .collect(),
        notes: Vec::new(),
    });

    let ports = a.modes.first().map_or(1.0, |m| m.ports_per_service);
    let slope = |f: &Option<LinearFit>| f.as_ref().map_or("-".to_owned(), |f| decimal(f.slope));
    sections.push(Section {
        title: format!(
            "cost against N (least squares; N = services, {ports} service ports each, so per service port = per service / {ports}); new = {}",
            a.basis.describe()
        ),
        header: [
            "mode", "points", "new p50 ns/service", "intercept ns", "R²", "new p99 ns/service",
            "lookup ns/service", "netfilter hooks ns/service", "established ns/service", "miss ns/service",
            "programming ms/1,000 services",
        ]
        .map(String::from)
        .to_vec(),
        rows: a
            .modes
            .iter()
            .map(|m| {
                let f = m.new_connection_p50.as_ref();
                vec![
                    m.mode.to_string(),
                    f.map_or(m.services.len(), |f| f.points).to_string(),
                    slope(&m.new_connection_p50),
                    f.map_or("-".into(), |f| decimal(f.intercept)),
                    f.map_or("-".into(), |f| format!("{:.3}", f.r_squared)),
                    slope(&m.new_connection_p99),
                    slope(&m.lookup_p50),
                    slope(&m.netfilter_new_connection_p50),
                    slope(&m.established_packet_p50),
                    slope(&m.miss_packet_p50),
                    m.control_plane_ms.as_ref().map_or("-".into(), |f| decimal(f.slope * 1000.0)),
                ]
            })
            .collect(),
        notes: if a.modes.iter().any(|m| m.new_connection_p50.as_ref().is_some_and(|f| f.slope < 0.0)) {
            vec!["a negative slope is noise (more rules never make a lookup cheaper): crossings below treat that mode as flat at its mean".into()]
        } else {
            Vec::new()
        },
    });

    sections.push(Section {
        title: format!("where modes cross (p50 {})", a.basis.describe()),
        header: ["modes", "crossing", "cheaper below", "cheaper above"].map(String::from).to_vec(),
        rows: a
            .crossovers
            .iter()
            .map(|c| {
                let crossing = match (c.status, c.services) {
                    (CrossoverStatus::InRange, Some(n)) => format!("{} services", thousands(n.round() as u64)),
                    (CrossoverStatus::NearRange, Some(n)) => {
                        format!("{} services (extrapolated)", thousands(n.round() as u64))
                    }
                    _ => "no crossover in range".into(),
                };
                vec![
                    format!("{} / {}", c.modes[0], c.modes[1]),
                    if c.tentative { format!("{crossing}, tentative") } else { crossing },
                    c.cheaper_below.to_string(),
                    c.cheaper_above.to_string(),
                ]
            })
            .collect(),
        notes: if a.crossovers.iter().any(|c| c.tentative) {
            vec!["tentative: a mode has fewer than 3 service counts, the slopes are within noise of each other, or the two costs are within 10 % of each other at an end of the measured range".into()]
        } else {
            Vec::new()
        },
    });

    for s in &a.ipvs_schedulers {
        sections.push(Section {
            title: format!("IPVS scheduler {} (ip_vs_schedule per call, corrected)", s.scheduler),
            header: ["services", "calls", "p50 ns"].map(String::from).to_vec(),
            rows: s
                .points
                .iter()
                .map(|p| vec![thousands(u64::from(p.services)), thousands(p.calls), thousands(p.p50_ns)])
                .collect(),
            notes: vec![match &s.p50_fit {
                Some(f) => format!(
                    "{} ns per service, R² {:.3}; one scheduler per sweep: compare others with `pathcost sweep --modes ipvs --ipvs-scheduler NAME` and report each file",
                    decimal(f.slope),
                    f.r_squared
                ),
                None => "one scheduler per sweep: compare others with `pathcost sweep --modes ipvs --ipvs-scheduler NAME` and report each file".into(),
            }],
        });
    }

    sections.push(Section {
        title: "probe self-cost (ns per entry/exit pair, calibrated at every point; the corrected figures have it removed)".into(),
        header: ["mechanism", "target", "points", "pair median", "pair min", "pair max", "inside span median"]
            .map(String::from)
            .to_vec(),
        rows: a
            .self_cost
            .iter()
            .map(|c| {
                vec![
                    c.mechanism.clone(),
                    c.target.clone(),
                    c.points.to_string(),
                    thousands(c.pair_ns_median.round() as u64),
                    thousands(c.pair_ns_min.round() as u64),
                    thousands(c.pair_ns_max.round() as u64),
                    thousands(c.span_ns_median.round() as u64),
                ]
            })
            .collect(),
        notes: Vec::new(),
    });

    // Every counter the collector reports; bracket bookkeeping only where
    // the bracket backend ran.
    let counters: Vec<(String, u64)> = crate::analysis::loss_counters(&a.losses)
        .into_iter()
        // The tracepoint spans' counters only where they ran.
        .filter(|(name, n)| *n > 0 || !(name.starts_with("brackets_") || name.starts_with("transits_")))
        .collect();
    let header: Vec<String> = counters.iter().map(|(name, _)| name.replace('_', " ")).collect();
    let row: Vec<String> = counters.iter().map(|(_, n)| thousands(*n)).collect();
    sections.push(Section { title: "losses, all points".into(), header, rows: vec![row], notes: Vec::new() });
    sections
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{analyze, tests::fixture};

    fn export(format: ExportFormat, results: &Results) -> String {
        let analysis = analyze(results);
        let bytes = format.exporter().export(&Document::Sweep { results, analysis: &analysis }).unwrap();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn snapshots_of_the_hand_built_fixture() {
        let r = fixture("small.json");
        for format in [ExportFormat::Table, ExportFormat::Md, ExportFormat::Csv, ExportFormat::Json] {
            insta::assert_snapshot!(format!("small_{format}"), export(format, &r));
        }
    }

    #[test]
    fn snapshots_of_the_vm_fixture() {
        let r = fixture("sweep-6.12-tcg.json");
        for format in [ExportFormat::Table, ExportFormat::Md, ExportFormat::Csv] {
            insta::assert_snapshot!(format!("vm_{format}"), export(format, &r));
        }
    }

    #[test]
    fn json_holds_the_results_unchanged_and_the_analysis() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sweep-6.12-tcg.json");
        let original: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let exported: serde_json::Value =
            serde_json::from_str(&export(ExportFormat::Json, &fixture("sweep-6.12-tcg.json"))).unwrap();
        assert_eq!(exported["report_schema_version"], 1);
        // Every value of the file comes out unchanged; fields added since
        // (with defaults) may come out too.
        fn contains(outer: &serde_json::Value, inner: &serde_json::Value, at: &str) {
            match (outer, inner) {
                (serde_json::Value::Object(o), serde_json::Value::Object(i)) => {
                    for (k, v) in i {
                        contains(o.get(k).unwrap_or_else(|| panic!("{at}.{k} missing")), v, &format!("{at}.{k}"));
                    }
                }
                (serde_json::Value::Array(o), serde_json::Value::Array(i)) => {
                    assert_eq!(o.len(), i.len(), "{at}");
                    for (n, (o, i)) in o.iter().zip(i).enumerate() {
                        contains(o, i, &format!("{at}[{n}]"));
                    }
                }
                _ => assert_eq!(outer, inner, "{at}"),
            }
        }
        contains(&exported["results"], &original, "results");
        assert_eq!(exported["analysis"]["fit_variable"], "services");
        assert_eq!(exported["analysis"]["modes"].as_array().unwrap().len(), 4);
        assert_eq!(exported["analysis"]["emulation_suspected"], true);
    }

    #[test]
    fn csv_is_rectangular_with_crlf_line_ends() {
        let text = export(ExportFormat::Csv, &fixture("sweep-6.12-tcg.json"));
        assert!(text.ends_with("\r\n"));
        let lines: Vec<&str> = text.split_terminator("\r\n").collect();
        assert_eq!(lines.len(), 1 + 12);
        let width = lines[0].split(',').count();
        assert!(lines.iter().all(|l| !l.contains('\n') && l.split(',').count() == width), "{text}");
    }

    #[test]
    fn svg_parses_and_has_one_series_per_mode() {
        for name in ["small.json", "sweep-6.12-tcg.json"] {
            let r = fixture(name);
            let text = export(ExportFormat::Svg, &r);
            let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{name}: SVG is not XML: {e}"));
            assert_eq!(doc.root_element().tag_name().name(), "svg");
            // plotters puts each label on a line of its own inside <text>.
            let texts: Vec<&str> =
                doc.descendants().filter(|n| n.has_tag_name("text")).filter_map(|n| n.text()).map(str::trim).collect();
            for mode in r.modes() {
                for label in [format!("{mode} p50"), format!("{mode} p99"), format!("{mode} programming")] {
                    assert_eq!(texts.iter().filter(|t| **t == label).count(), 1, "{name}: legend entry {label:?}");
                }
                // Two polylines in the mode's colour at width 2, a vertex per
                // measured N: its p50 line and its programming line.
                let c = svg::mode_colour(mode);
                let colour = format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2);
                let lines = doc
                    .descendants()
                    .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke") == Some(colour.as_str()))
                    .filter(|n| n.attribute("stroke-width") == Some("2"))
                    .filter(|n| n.attribute("points").is_some_and(|p| p.split_whitespace().count() == r.points_of(mode).len()))
                    .count();
                assert_eq!(lines, 2, "{name}: {mode} p50 and programming lines in {colour}");
            }
            let modes: Vec<String> = r.modes().iter().map(|m| m.to_string()).collect();
            let foreign = texts.iter().filter(|t| t.ends_with(" p50") && !modes.iter().any(|m| **t == format!("{m} p50"))).count();
            assert_eq!(foreign, 0, "{name}: a p50 series for a mode not measured");
            assert!(!text.contains("NaN") && !text.contains("inf"), "{name}");
        }
    }

    #[test]
    fn svg_of_no_points_is_still_a_document() {
        let mut r = fixture("small.json");
        r.points.clear();
        let text = export(ExportFormat::Svg, &r);
        roxmltree::Document::parse(&text).unwrap();
        assert!(text.contains("no measured points"));
    }

    #[test]
    fn every_format_survives_empty_results() {
        let mut r = fixture("small.json");
        r.points.clear();
        for format in [ExportFormat::Table, ExportFormat::Md, ExportFormat::Csv, ExportFormat::Json] {
            assert!(!export(format, &r).is_empty());
        }
    }

    fn trace_report() -> TraceReport {
        use crate::{collection::Losses, results::SiteRow, statistics::Summary};
        let s = Summary { count: 10, mean_ns: 1500.5, p50_ns: 1400, p90_ns: 2000, p99_ns: 3000, max_ns: 3100 };
        TraceReport {
            schema_version: crate::report::TRACE_SCHEMA_VERSION,
            kernel: "6.12.0-test".into(),
            duration_s: 10.0,
            sites: Vec::new(),
            rows: vec![SiteRow {
                site: "nft_do_chain".into(),
                hook: "PRE_ROUTING".into(),
                table: "kube-proxy".into(),
                chain: "nat-prerouting, \"odd\"".into(),
                verdict: String::new(),
                inclusive: s,
                exclusive: s,
                inclusive_corrected: s,
                exclusive_corrected: s,
            }],
            per_packet: s,
            per_packet_corrected: s,
            in_kernel: Vec::new(),
            losses: Losses::default(),
            self_cost: Vec::new(),
            program_run: Vec::new(),
            collection: crate::report::Collection::Events,
        }
    }

    #[test]
    fn a_trace_exports_as_md_and_csv_but_not_svg() {
        let report = trace_report();
        let doc = Document::Trace(&report);
        let md = String::from_utf8(ExportFormat::Md.exporter().export(&doc).unwrap()).unwrap();
        insta::assert_snapshot!("trace_md", md);
        let csv = String::from_utf8(ExportFormat::Csv.exporter().export(&doc).unwrap()).unwrap();
        assert!(csv.contains(",\"nat-prerouting, \"\"odd\"\"\","), "{csv}");
        let json: serde_json::Value = serde_json::from_slice(&ExportFormat::Json.exporter().export(&doc).unwrap()).unwrap();
        assert_eq!(json["rows"][0]["site"], "nft_do_chain");
        let e = ExportFormat::Svg.exporter().export(&doc).unwrap_err();
        assert!(e.to_string().contains("needs a sweep"), "{e}");
    }

    #[test]
    fn targets_writing_one_file_are_refused_before_anything_is_written() {
        let r = fixture("small.json");
        let a = analyze(&r);
        let dir = std::env::temp_dir().join(format!("pathcost-export-{}", std::process::id()));
        let path = dir.join("same.out");
        let targets = [
            ExportTarget { format: ExportFormat::Md, path: path.clone() },
            ExportTarget { format: ExportFormat::Csv, path: path.clone() },
        ];
        let e = export_all(&Document::Sweep { results: &r, analysis: &a }, &targets).unwrap_err();
        assert!(e.to_string().starts_with("md and csv would both write"), "{e}");
        assert!(!path.exists());
        let targets = [
            ExportTarget { format: ExportFormat::Md, path: dir.join("r.md") },
            ExportTarget { format: ExportFormat::Svg, path: dir.join("sub/r.svg") },
        ];
        export_all(&Document::Sweep { results: &r, analysis: &a }, &targets).unwrap();
        assert!(dir.join("r.md").exists() && dir.join("sub/r.svg").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn export_targets_parse() {
        assert_eq!(
            "md=out/report.md".parse::<ExportTarget>().unwrap(),
            ExportTarget { format: ExportFormat::Md, path: "out/report.md".into() }
        );
        assert_eq!("markdown=-".parse::<ExportTarget>().unwrap().format, ExportFormat::Md);
        assert_eq!("SVG=a=b.svg".parse::<ExportTarget>().unwrap().path, PathBuf::from("a=b.svg"));
        assert!("md".parse::<ExportTarget>().unwrap_err().contains("FORMAT=PATH"));
        assert!("png=x.png".parse::<ExportTarget>().unwrap_err().contains("unknown format 'png'"));
        assert!("csv=".parse::<ExportTarget>().unwrap_err().contains("csv=-"));
    }
}
