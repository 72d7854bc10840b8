//! Every report pathcost writes goes out through here: one [`Exporter`]
//! per format (one module each), a registry of the formats
//! ([`ExportFormat`]), and the documents they render ([`Document`]: a
//! sweep with its analysis, a trace, a detection, a bench run, advice, a
//! ruleset). A command's `--format` (to stdout or `--output`) and each of
//! its `--export FORMAT=PATH` are two ways to pick exporters from the same
//! set; both become [`ExportTarget`]s, checked before any work starts
//! ([`check_targets`]) and written in order, each as soon as it is
//! rendered ([`export_all`]), so a later failure loses nothing already
//! written. Writing is [`crate::output`]'s: atomic, `-` is stdout.

pub mod csv;
pub mod json;
pub mod markdown;
pub mod sections;
pub mod svg;
pub mod table;

use std::{fmt, path::PathBuf, str::FromStr};

use anyhow::{Context as _, Result};

use crate::{
    analysis::{advise::NodeFacts, Analysis},
    bench::BenchReport,
    detection::Detection,
    output,
    results::Results,
    synthesis::program::Step,
    trace::TraceReport,
};

/// What is exported.
#[derive(Clone, Copy, Debug)]
pub enum Document<'a> {
    /// A sweep's results and what the analysis made of them (`sweep`,
    /// `report`).
    Sweep { results: &'a Results, analysis: &'a Analysis },
    /// A live trace's report (`trace`, `selftest`).
    Trace(&'a TraceReport),
    /// What the node runs and what its kernel allows (`detect`).
    Detection(&'a Detection),
    /// pathcost's own overhead beside bpftrace (`bench`).
    Bench(&'a BenchReport),
    /// Which mode to run, from a sweep's results (`advise`); `source` names
    /// the results file.
    Advice { results: &'a Results, analysis: &'a Analysis, source: &'a str, node: &'a NodeFacts },
    /// The inputs one sweep point feeds to the tools (`rules`), after a
    /// line that names the point (`invocation`).
    Rules { invocation: &'a str, steps: &'a [Step] },
}

/// The kinds of [`Document`], for checking a format before the document
/// exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DocumentKind {
    Sweep,
    Trace,
    Detection,
    Bench,
    Advice,
    Rules,
}

impl Document<'_> {
    pub fn kind(&self) -> DocumentKind {
        match self {
            Document::Sweep { .. } => DocumentKind::Sweep,
            Document::Trace(_) => DocumentKind::Trace,
            Document::Detection(_) => DocumentKind::Detection,
            Document::Bench(_) => DocumentKind::Bench,
            Document::Advice { .. } => DocumentKind::Advice,
            Document::Rules { .. } => DocumentKind::Rules,
        }
    }
}

impl DocumentKind {
    /// The document as a reader knows it, for messages.
    fn noun(self) -> &'static str {
        match self {
            DocumentKind::Sweep => "a sweep report",
            DocumentKind::Trace => "a trace report",
            DocumentKind::Detection => "a detection",
            DocumentKind::Bench => "a bench report",
            DocumentKind::Advice => "advice",
            DocumentKind::Rules => "a ruleset",
        }
    }

    /// The formats that can render this kind, in the registry's order.
    pub fn formats(self) -> Vec<ExportFormat> {
        ExportFormat::ALL.into_iter().filter(|f| f.exporter().serves(self)).collect()
    }

    /// Whether `format` can render this kind; if not, a message that names
    /// the formats that can.
    pub fn check(self, format: ExportFormat) -> Result<(), String> {
        if format.exporter().serves(self) {
            return Ok(());
        }
        let formats: Vec<&str> = self.formats().into_iter().map(ExportFormat::as_str).collect();
        Err(format!("{} cannot be written as {format}: use {}", self.noun(), formats.join(", ")))
    }
}

/// Renders documents in one format.
pub trait Exporter {
    /// Whether this format can render documents of `kind`.
    fn serves(&self, kind: DocumentKind) -> bool;
    /// The document's bytes in this format. Asked only for a kind it
    /// [serves](Exporter::serves) ([`export_all`] checks first).
    fn export(&self, document: &Document) -> Result<Vec<u8>>;
}

/// The answer of an exporter asked for a kind it does not serve.
fn unsupported(format: ExportFormat, kind: DocumentKind) -> anyhow::Error {
    anyhow::anyhow!(kind.check(format).err().unwrap_or_else(|| format!("{format} cannot render {}", kind.noun())))
}

/// The formats, as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Plain text for a terminal: aligned columns (for `rules`, each
    /// input under the command it is fed to).
    #[value(alias = "text")]
    Table,
    /// Markdown tables, with the warnings (sweep and trace).
    #[value(alias = "markdown")]
    Md,
    /// One row per point (sweep) or per site row (trace), RFC 4180.
    Csv,
    /// The document as data (a sweep: its results plus the analysis).
    Json,
    /// Plots: cost per new connection and programming time against N
    /// (sweep only).
    Svg,
}

impl ExportFormat {
    /// Every format, in the order help and messages list them.
    pub const ALL: [ExportFormat; 5] =
        [ExportFormat::Table, ExportFormat::Md, ExportFormat::Csv, ExportFormat::Json, ExportFormat::Svg];

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
        <ExportFormat as clap::ValueEnum>::from_str(s, true).map_err(|_| {
            let all: Vec<&str> = ExportFormat::ALL.into_iter().map(ExportFormat::as_str).collect();
            format!("unknown format '{s}' (use {})", all.join(", "))
        })
    }
}

/// One output: a format and where it goes (`-` is stdout). `--export`
/// gives one as `FORMAT=PATH`; a command's `--format` and `--output` give
/// another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportTarget {
    pub format: ExportFormat,
    pub path: PathBuf,
}

impl ExportTarget {
    /// `format` on stdout.
    pub fn stdout(format: ExportFormat) -> ExportTarget {
        ExportTarget { format, path: PathBuf::from("-") }
    }
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

/// Checks, before the work that feeds them, that every target can render
/// `kind`, that no two write one file, and that each can be written, so a
/// long run is not lost to a typo at its end.
pub fn check_targets(kind: DocumentKind, targets: &[ExportTarget]) -> Result<()> {
    for t in targets {
        kind.check(t.format).map_err(anyhow::Error::msg)?;
    }
    // A clash found after writing would leave one output silently
    // overwritten by another.
    for (i, a) in targets.iter().enumerate() {
        if let Some(b) = targets[i + 1..].iter().find(|b| !output::is_stdout(&b.path) && b.path == a.path) {
            anyhow::bail!("{} and {} would both write {}: give each output its own file", a.format, b.format, a.path.display());
        }
    }
    targets.iter().try_for_each(|t| output::check_file(&t.path))
}

/// Renders and writes every target in order, each as soon as it is ready.
pub fn export_all(document: &Document, targets: &[ExportTarget]) -> Result<()> {
    check_targets(document.kind(), targets)?;
    for t in targets {
        let bytes = t.format.exporter().export(document).with_context(|| format!("exporting {}", t.format))?;
        output::write_file(&t.path, &bytes)?;
    }
    Ok(())
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
            schema_version: crate::trace::TRACE_SCHEMA_VERSION,
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
            collection: crate::trace::Collection::Events,
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
        assert_eq!(e.to_string(), "a trace report cannot be written as svg: use table, md, csv, json");
    }

    #[test]
    fn each_kind_lists_the_formats_that_render_it() {
        use ExportFormat::*;
        assert_eq!(DocumentKind::Sweep.formats(), [Table, Md, Csv, Json, Svg]);
        assert_eq!(DocumentKind::Trace.formats(), [Table, Md, Csv, Json]);
        for kind in [DocumentKind::Detection, DocumentKind::Bench, DocumentKind::Rules] {
            assert_eq!(kind.formats(), [Table, Json], "{kind:?}");
        }
        assert_eq!(DocumentKind::Advice.formats(), [Table]);
        // Refused before anything is rendered or written.
        let path = std::env::temp_dir().join(format!("pathcost-kind-{}.svg", std::process::id()));
        let e = check_targets(DocumentKind::Trace, &[ExportTarget { format: Svg, path: path.clone() }]).unwrap_err();
        assert!(e.to_string().starts_with("a trace report cannot be written as svg"), "{e}");
        assert!(!path.exists());
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
        assert_eq!("png=x.png".parse::<ExportTarget>().unwrap_err(), "unknown format 'png' (use table, md, csv, json, svg)");
        assert_eq!("text=-".parse::<ExportTarget>().unwrap().format, ExportFormat::Table);
        assert!("csv=".parse::<ExportTarget>().unwrap_err().contains("csv=-"));
    }
}
