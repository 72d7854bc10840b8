//! Reading a sweep's results file back: the reader's side of the schema
//! that [`crate::sweep::results`] writes, and the checks that turn a
//! corrupt, truncated or foreign file into one clear message.
//!
//! These are mirror types rather than the writer's own: the writer borrows
//! static strings and enums that only make sense while measuring, and a
//! reader must accept files written by other builds. A test serialises the
//! writer's types and reads them back here, so the two cannot drift apart
//! unnoticed.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{
    collection::{calibration::SelfCost, Losses},
    statistics::Summary,
    sweep::results::{LookupFigure, TrafficCounts, SCHEMA_VERSION},
    synthesis::program::Mode,
};

/// Why a results file could not be used. Each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("results file {path} cannot be read")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("results file {path} is empty (did the sweep stop before its first point?)")]
    Empty { path: String },
    #[error(
        "results file {path} ends early at line {line}, column {column}: it is truncated \
         (the sweep was probably interrupted while writing it; run it again)"
    )]
    Truncated { path: String, line: usize, column: usize },
    #[error("results file {path} is not valid JSON: {source}")]
    Syntax {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("results file {path} is {what}, not a pathcost sweep results file ({hint})")]
    NotResults { path: String, what: &'static str, hint: &'static str },
    #[error("results file {path} has schema_version {found}; this pathcost reads versions 1 to {SCHEMA_VERSION}")]
    WrongVersion { path: String, found: String },
    #[error("results file {path} does not match results schema version {SCHEMA_VERSION}: {source}")]
    Schema {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A sweep's results, as read from its file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    pub schema_version: u32,
    pub tool: String,
    pub kernel: String,
    pub settings: Settings,
    #[serde(default)]
    pub skipped: Vec<Skipped>,
    pub points: Vec<Point>,
    /// A signal stopped the sweep before its last point (absent in files
    /// written before the field existed: not interrupted).
    #[serde(default)]
    pub interrupted: bool,
}

/// The sweep's command-line settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    pub modes: Vec<Mode>,
    pub services: Vec<u32>,
    pub endpoints: u32,
    pub protocols: Vec<String>,
    pub connections: u32,
    pub miss: u32,
    pub established_flows: u32,
    pub packets_per_flow: u32,
    pub ipvs_scheduler: String,
    /// The `--backend` asked for (`auto`, `fentry`, `kprobe`); what each
    /// point got is `Point::backend`.
    pub backend: String,
    pub rate: u32,
    pub seed: u64,
}

/// A mode the sweep could not run, with the reason.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Skipped {
    pub mode: Mode,
    pub reason: String,
}

/// One (mode, N) measurement.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Point {
    pub mode: Mode,
    pub services: u32,
    pub endpoints: u32,
    pub service_ports: u32,
    /// Mechanisms behind the numbers, e.g. `fentry+kprobe`.
    pub backend: String,
    pub kernel: String,
    /// Control-plane cost: wall time to program the rules.
    pub program_ms: f64,
    /// The like-for-like figure: a forwarded packet's transit through the
    /// node, with only the transit tracepoints attached. Zero counts in
    /// version 1 files, which predate it.
    #[serde(default)]
    pub transit_new_connection: Summary,
    #[serde(default)]
    pub transit_established_packet: Summary,
    /// The call that finds a new connection's service, named per mode.
    #[serde(default)]
    pub lookup_new_connection: Option<LookupFigure>,
    pub sites: Vec<SiteRow>,
    pub per_new_connection: Summary,
    /// As measured, before the probes' own cost was removed. Absent in
    /// files written before raw figures were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_new_connection_raw: Option<Summary>,
    pub per_established_packet: Summary,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_established_packet_raw: Option<Summary>,
    pub per_miss_packet: Summary,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_miss_packet_raw: Option<Summary>,
    pub traffic: TrafficCounts,
    pub losses: Losses,
    pub self_cost: Vec<SelfCost>,
}

/// One probe site at one hook in one table or chain.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SiteRow {
    pub site: String,
    pub hook: String,
    pub table: String,
    pub chain: String,
    /// The IPVS input hook's verdict (STOLEN, ACCEPT); empty elsewhere.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub verdict: String,
    #[serde(flatten)]
    pub inclusive: Summary,
    pub exclusive: Summary,
    pub inclusive_corrected: Summary,
    pub exclusive_corrected: Summary,
}

impl Results {
    /// Reads and checks a results file.
    pub fn load(path: &Path) -> Result<Results, LoadError> {
        let text = std::fs::read(path).map_err(|source| LoadError::Read { path: path.display().to_string(), source })?;
        Results::parse(&String::from_utf8_lossy(&text), &path.display().to_string())
    }

    /// Parses results text; `name` is what messages call the file.
    pub fn parse(text: &str, name: &str) -> Result<Results, LoadError> {
        let path = name.to_owned();
        if text.trim().is_empty() {
            return Err(LoadError::Empty { path });
        }
        // Untyped first: a version mismatch must be reported as such, not
        // as whichever field happened to change.
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| match e.classify() {
            serde_json::error::Category::Eof => LoadError::Truncated { path: path.clone(), line: e.line(), column: e.column() },
            _ => LoadError::Syntax { path: path.clone(), source: e },
        })?;
        let Some(object) = value.as_object() else {
            return Err(LoadError::NotResults {
                path,
                what: "a JSON value that is not an object",
                hint: "pathcost report reads the results.json a sweep writes",
            });
        };
        match object.get("schema_version") {
            None if object.contains_key("per_packet") && object.contains_key("rows") => {
                return Err(LoadError::NotResults {
                    path,
                    what: "a trace report",
                    hint: "export a trace with `pathcost trace --export FORMAT=PATH`",
                })
            }
            None => {
                return Err(LoadError::NotResults {
                    path,
                    what: "a JSON object without schema_version",
                    hint: "pathcost report reads the results.json a sweep writes",
                })
            }
            // Version 1 lacks the transit and lookup figures, which read
            // as absent (zero counts, no lookup); nothing else changed.
            Some(v) if v.as_u64().is_some_and(|v| (1..=u64::from(SCHEMA_VERSION)).contains(&v)) => {}
            Some(v) => return Err(LoadError::WrongVersion { path, found: v.to_string() }),
        }
        if object.contains_key("per_packet") && !object.contains_key("points") {
            return Err(LoadError::NotResults {
                path,
                what: "a trace report",
                hint: "export a trace with `pathcost trace --export FORMAT=PATH`",
            });
        }
        // Typed from the text again so that errors carry line and column.
        serde_json::from_str(text).map_err(|source| LoadError::Schema { path, source })
    }

    /// Converts the writer's own results (a sweep that just finished) into
    /// the reader's, through the same JSON a file would hold.
    pub fn from_sweep(results: &crate::sweep::results::SweepResults) -> Result<Results, LoadError> {
        let text = serde_json::to_string(results).map_err(|source| LoadError::Schema { path: "(this sweep)".into(), source })?;
        Results::parse(&text, "(this sweep)")
    }

    /// Modes in a stable order: the order `Mode::ALL` lists them.
    pub fn modes(&self) -> Vec<Mode> {
        Mode::ALL.into_iter().filter(|m| self.points.iter().any(|p| p.mode == *m)).collect()
    }

    /// Points of one mode, by increasing N.
    pub fn points_of(&self, mode: Mode) -> Vec<&Point> {
        let mut points: Vec<&Point> = self.points.iter().filter(|p| p.mode == mode).collect();
        points.sort_by_key(|p| p.services);
        points
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
    }

    fn error_of(text: &str) -> String {
        match Results::parse(text, "r.json") {
            Ok(_) => panic!("{text:?} parsed"),
            Err(e) => {
                // The whole chain, as `pathcost: {e:#}` prints it.
                let mut msg = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    msg.push_str(&format!(": {s}"));
                    source = s.source();
                }
                msg
            }
        }
    }

    #[test]
    fn the_vm_fixture_loads() {
        let r = Results::load(&fixture("sweep-6.12-tcg.json")).unwrap();
        assert_eq!(r.schema_version, 1);
        assert_eq!(r.points.len(), 12);
        assert!(r.points.iter().all(|p| p.per_new_connection_raw.is_some()));
    }

    #[test]
    fn a_missing_file_names_the_file() {
        let e = Results::load(Path::new("/nonexistent/results.json")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/results.json"), "{e}");
    }

    #[test]
    fn corrupt_files_give_one_clear_message_naming_the_file() {
        let full = std::fs::read_to_string(fixture("small.json")).unwrap();
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "results file r.json is empty"),
            ("   \n".into(), "results file r.json is empty"),
            (full[..full.len() / 2].into(), "results file r.json ends early at line"),
            ("{\"schema_version\": 1,, }".into(), "results file r.json is not valid JSON: "),
            ("[1, 2]".into(), "results file r.json is a JSON value that is not an object"),
            ("{\"points\": []}".into(), "results file r.json is a JSON object without schema_version"),
            (full.replacen("\"schema_version\": 1", "\"schema_version\": 3", 1),
             "results file r.json has schema_version 3; this pathcost reads versions 1 to 2"),
            (full.replacen("\"schema_version\": 1", "\"schema_version\": \"1\"", 1),
             "results file r.json has schema_version \"1\"; this pathcost reads versions 1 to 2"),
            (full.replacen("\"mode\": \"ipvs\"", "\"mode\": \"kernelspace\"", 1),
             "results file r.json does not match results schema version 2: unknown variant `kernelspace`"),
            (full.replacen("\"program_ms\"", "\"program_seconds\"", 1),
             "results file r.json does not match results schema version 2: missing field `program_ms` at line"),
            ("{\"schema_version\": 1, \"kernel\": \"x\", \"duration_s\": 1.0, \"rows\": [], \"per_packet\": {}}".into(),
             "results file r.json is a trace report, not a pathcost sweep results file"),
        ];
        for (text, expected) in cases {
            let msg = error_of(&text);
            assert!(msg.starts_with(expected), "expected {expected:?}\n     got {msg:?}");
        }
    }

    #[test]
    fn empty_points_load() {
        let full = std::fs::read_to_string(fixture("small.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&full).unwrap();
        let mut v = v;
        v["points"] = serde_json::json!([]);
        let r = Results::parse(&v.to_string(), "r.json").unwrap();
        assert!(r.points.is_empty());
    }

    #[test]
    fn files_without_raw_figures_still_load() {
        let full = std::fs::read_to_string(fixture("small.json")).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&full).unwrap();
        for p in v["points"].as_array_mut().unwrap() {
            let p = p.as_object_mut().unwrap();
            p.remove("per_new_connection_raw");
            p.remove("per_established_packet_raw");
            p.remove("per_miss_packet_raw");
        }
        let r = Results::parse(&v.to_string(), "r.json").unwrap();
        assert!(r.points.iter().all(|p| p.per_new_connection_raw.is_none()));
    }

    #[test]
    fn interrupted_is_read_and_defaults_to_false_in_older_files() {
        let full = std::fs::read_to_string(fixture("small.json")).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&full).unwrap();
        v.as_object_mut().unwrap().remove("interrupted");
        assert!(!Results::parse(&v.to_string(), "r.json").unwrap().interrupted);
        v["interrupted"] = serde_json::json!(true);
        assert!(Results::parse(&v.to_string(), "r.json").unwrap().interrupted);
    }

    /// The writer's schema and the reader's must agree field for field: a
    /// field added to `sweep::results` and not here fails this test.
    #[test]
    fn the_writers_results_read_back_unchanged() {
        use crate::{probes::Backend, sweep::results as w};
        let summary = Summary { count: 3, mean_ns: 12.5, p50_ns: 11, p90_ns: 20, p99_ns: 30, max_ns: 31 };
        let written = w::SweepResults {
            schema_version: SCHEMA_VERSION,
            tool: "pathcost test".into(),
            kernel: "6.12.0".into(),
            settings: w::SweepSettings {
                modes: vec![Mode::Nftables],
                services: vec![10],
                endpoints: 2,
                protocols: vec!["udp"],
                connections: 5,
                miss: 1,
                established_flows: 1,
                packets_per_flow: 2,
                ipvs_scheduler: "rr",
                backend: Backend::Auto,
                rate: 0,
                seed: 1,
            },
            skipped: vec![w::Skipped { mode: Mode::Ipvs, reason: "no ip_vs".into() }],
            points: vec![w::Point {
                mode: Mode::Nftables,
                services: 10,
                endpoints: 2,
                service_ports: 10,
                backend: "kprobe".into(),
                kernel: "6.12.0".into(),
                program_ms: 1.5,
                transit_new_connection: summary,
                transit_established_packet: summary,
                lookup_new_connection: Some(w::LookupFigure {
                    what: Mode::Nftables.lookup().describe(),
                    mechanism: crate::probes::Mechanism::Kprobe,
                    summary,
                }),
                sites: vec![crate::report::SiteRow {
                    site: "nft_do_chain",
                    hook: "PRE_ROUTING",
                    table: "kube-proxy".into(),
                    chain: "nat-prerouting".into(),
                    verdict: "STOLEN".into(),
                    inclusive: summary,
                    exclusive: summary,
                    inclusive_corrected: summary,
                    exclusive_corrected: summary,
                }],
                per_new_connection: summary,
                per_new_connection_raw: summary,
                per_established_packet: summary,
                per_established_packet_raw: summary,
                per_miss_packet: summary,
                per_miss_packet_raw: summary,
                traffic: TrafficCounts {
                    new_connections: 5,
                    miss_packets: 1,
                    established_packets: 2,
                    transit_new_connections: 5,
                    transit_established_packets: 2,
                },
                losses: Losses::default(),
                self_cost: vec![SelfCost {
                    mechanism: "kprobe".into(),
                    target: "getppid".into(),
                    pair_ns: 100.0,
                    span_ns: 50.0,
                    calls: 1000,
                }],
            }],
            interrupted: true,
        };
        let as_written = serde_json::to_value(&written).unwrap();
        let read = Results::from_sweep(&written).unwrap();
        assert_eq!(serde_json::to_value(&read).unwrap(), as_written);
    }
}
