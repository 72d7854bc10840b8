//! The sweep's results file (`results.json`): one versioned JSON document,
//! written by `pathcost sweep` and read by `report`, `advise` and the tests
//! through these same types, so the writer and the reader cannot drift
//! apart. Values are in base units (ns, ms) and only formatted on output.
//! Reading checks the file first, so that a corrupt, truncated, foreign or
//! newer file is one clear message naming it.
//!
//! ```text
//! {
//!   "schema_version": 2,
//!   "tool": "pathcost 0.1.0",
//!   "kernel": "6.12.117+deb12-amd64",
//!   "settings": { modes, services, endpoints, connections, ... },
//!   "skipped": [ { "mode": "ipvs", "reason": "..." } ],
//!   "interrupted": false,
//!   "points": [ {
//!     "mode": "iptables-legacy",  "services": 1000,  "endpoints": 2,
//!     "service_ports": 2000,      "backend": "kprobe",
//!     "kernel": "...",            "program_ms": 812.4,
//!     "transit_new_connection":     { "count", "mean_ns", "p50_ns", "p90_ns", "p99_ns", "max_ns" },
//!     "transit_established_packet": { ... },
//!     "lookup_new_connection": { "what": "ipt_do_table nat/PREROUTING",
//!                                "mechanism": "kprobe", "count", "mean_ns", ... } | null,
//!     "sites": [ { "site", "hook", "table", "chain", "count", "mean_ns",
//!                  "p50_ns", "p90_ns", "p99_ns", "max_ns",
//!                  "exclusive": {...}, "inclusive_corrected": {...},
//!                  "exclusive_corrected": {...} } ],
//!     "per_new_connection":     { "count", "mean_ns", "p50_ns", "p90_ns", "p99_ns", "max_ns" },
//!     "per_new_connection_raw": { ... },
//!     "per_established_packet": { ... },  "per_established_packet_raw": { ... },
//!     "per_miss_packet":        { ... },  "per_miss_packet_raw": { ... },
//!     "traffic": { "new_connections", "miss_packets", "established_packets" },
//!     "losses": { ... },  "self_cost": [ ... ]
//!   } ]
//! }
//! ```
//!
//! `interrupted` is true when SIGINT or SIGTERM stopped the sweep before
//! its last point: `points` then holds only the points finished before it.
//!
//! `transit_*` is the one span measured the same way in every mode: from a
//! forwarded packet's arrival on the node's client-facing device
//! (`net:netif_receive_skb`) to the same skb's departure on its
//! backend-facing device (`net:net_dev_start_xmit`), taken in a phase with
//! only those two tracepoints attached. It is the figure to compare modes by.
//!
//! `lookup_new_connection` is, per new connection, the call in which the
//! mode finds the service and backend (`what` names it; see
//! `Mode::lookup`), from the probed phase. IPVS's excludes the transmit it
//! does from inside its hook. `null` with the bracket backend, which cannot
//! isolate it.
//!
//! `per_*` figures are the netfilter time one packet spent in the node
//! namespace, summed over the hooks it traversed (nested hooks counted
//! once), for packets of that traffic phase: corrected for the probes' own
//! cost, and as measured (`_raw`).
//!
//! # Versions
//!
//! Older files are migrated as they are read: every field a later version
//! added has a serde default that says "not measured" (zero counts, no
//! lookup, no raw figure, not interrupted), and `schema_version` keeps the
//! value the file was written with, so an export of the results shows what
//! the file held.
//!
//! | version | what it changed |
//! | --- | --- |
//! | 1 | first version. Early files lack the `_raw` figures and `interrupted`, which were added without a bump (both optional) |
//! | 2 | adds `transit_new_connection`, `transit_established_packet`, `lookup_new_connection` and the transit counts in `traffic` |

use std::{ops::RangeInclusive, path::Path};

use serde::{Deserialize, Serialize};

use crate::{
    collection::{calibration::SelfCost, Losses},
    probes::Mechanism,
    statistics::Summary,
    synthesis::program::Mode,
};

/// The version this build writes.
pub const SCHEMA_VERSION: u32 = 2;
/// The versions this build reads (see "Versions" above).
pub const READABLE_VERSIONS: RangeInclusive<u32> = 1..=SCHEMA_VERSION;

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

/// A sweep's results: what `pathcost sweep` writes and what is read back.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    /// The version the file was written with (see "Versions" above).
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
    /// The `--backend` asked for (`auto`, `fentry`, `kprobe`, `bracket`);
    /// what each point got is `Point::backend`. A string, so that a file
    /// from a build with another backend still reads.
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
    /// Service ports programmed (services × protocols): what kube-proxy
    /// and its rule counts are about.
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
    /// Per new connection, the call that finds the service (raw); `None`
    /// with the bracket, and in version 1 files.
    #[serde(default)]
    pub lookup_new_connection: Option<LookupFigure>,
    pub sites: Vec<SiteRow>,
    /// Corrected for the probes' own cost (see `self_cost`).
    pub per_new_connection: Summary,
    /// As measured, before the probes' own cost was removed. A sweep always
    /// writes it; absent in files written before raw figures were recorded.
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

/// One probe site at one hook in one table or chain: a row of a point's
/// `sites` and of the trace report (`pathcost trace --format json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SiteRow {
    pub site: String,
    /// Netfilter hook name (`PRE_ROUTING`, ...), `-` when the call has none.
    pub hook: String,
    /// iptables table or nf_tables table.
    pub table: String,
    /// nf_tables chain; empty otherwise.
    pub chain: String,
    /// IPVS input hook verdict (STOLEN: IPVS took the packet; ACCEPT: not
    /// IPVS traffic); empty for other sites.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub verdict: String,
    /// Inclusive time, raw.
    #[serde(flatten)]
    pub inclusive: Summary,
    /// Exclusive (self) time: minus nested probed calls.
    pub exclusive: Summary,
    /// Inclusive time with the probes' own cost removed.
    pub inclusive_corrected: Summary,
    /// Self time with the probes' own cost removed.
    pub exclusive_corrected: Summary,
}

/// What was sent in each phase.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct TrafficCounts {
    pub new_connections: u64,
    pub miss_packets: u64,
    pub established_packets: u64,
    /// Sent in the transit-only phase (absent before version 2).
    #[serde(default)]
    pub transit_new_connections: u64,
    #[serde(default)]
    pub transit_established_packets: u64,
}

/// The lookup of a new connection, named for what it is in this mode.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LookupFigure {
    /// The call, e.g. `nft_do_chain kube-proxy chain nat-prerouting (PREROUTING)`.
    pub what: String,
    pub mechanism: Mechanism,
    #[serde(flatten)]
    pub summary: Summary,
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
            // Older versions migrate through the fields' defaults.
            Some(v) if v.as_u64().and_then(|v| u32::try_from(v).ok()).is_some_and(|v| READABLE_VERSIONS.contains(&v)) => {}
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

    /// The file's text: pretty-printed, with a final newline.
    pub fn to_json(&self) -> serde_json::Result<String> {
        Ok(serde_json::to_string_pretty(self)? + "\n")
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

    /// What a sweep writes reads back to the same text: no field is
    /// written that the reader drops, or read under another name.
    #[test]
    fn written_results_read_back_unchanged() {
        let summary = Summary { count: 3, mean_ns: 12.5, p50_ns: 11, p90_ns: 20, p99_ns: 30, max_ns: 31 };
        let written = Results {
            schema_version: SCHEMA_VERSION,
            tool: "pathcost test".into(),
            kernel: "6.12.0".into(),
            settings: Settings {
                modes: vec![Mode::Nftables],
                services: vec![10],
                endpoints: 2,
                protocols: vec!["udp".into()],
                connections: 5,
                miss: 1,
                established_flows: 1,
                packets_per_flow: 2,
                ipvs_scheduler: "rr".into(),
                backend: crate::probes::Backend::Auto.as_str().into(),
                rate: 0,
                seed: 1,
            },
            skipped: vec![Skipped { mode: Mode::Ipvs, reason: "no ip_vs".into() }],
            points: vec![Point {
                mode: Mode::Nftables,
                services: 10,
                endpoints: 2,
                service_ports: 10,
                backend: "kprobe".into(),
                kernel: "6.12.0".into(),
                program_ms: 1.5,
                transit_new_connection: summary,
                transit_established_packet: summary,
                lookup_new_connection: Some(LookupFigure {
                    what: Mode::Nftables.lookup().describe(),
                    mechanism: crate::probes::Mechanism::Kprobe,
                    summary,
                }),
                sites: vec![SiteRow {
                    site: "nft_do_chain".into(),
                    hook: "PRE_ROUTING".into(),
                    table: "kube-proxy".into(),
                    chain: "nat-prerouting".into(),
                    verdict: "STOLEN".into(),
                    inclusive: summary,
                    exclusive: summary,
                    inclusive_corrected: summary,
                    exclusive_corrected: summary,
                }],
                per_new_connection: summary,
                per_new_connection_raw: Some(summary),
                per_established_packet: summary,
                per_established_packet_raw: Some(summary),
                per_miss_packet: summary,
                per_miss_packet_raw: Some(summary),
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
        let text = written.to_json().unwrap();
        assert!(text.contains("\"backend\": \"auto\""), "{text}");
        let read = Results::parse(&text, "r.json").unwrap();
        assert_eq!(read.to_json().unwrap(), text);
        // `settings.backend` is written by name: the same name serde gives.
        for b in <crate::probes::Backend as clap::ValueEnum>::value_variants() {
            assert_eq!(serde_json::to_string(b).unwrap(), format!("\"{}\"", b.as_str()));
        }
    }
}
