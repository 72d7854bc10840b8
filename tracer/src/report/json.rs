//! JSON: each document as data. A sweep gives its results exactly as read
//! plus the analysis, so one file holds both the measurements and what was
//! concluded from them; a trace, a detection and a bench run give their
//! report as it is (the README documents the shapes other tools read); a
//! ruleset gives `{tool, args, input}` per step, in the order applied.

use anyhow::Result;
use serde::Serialize;

use super::{unsupported, Document, DocumentKind, ExportFormat, Exporter};
use crate::{analysis::Analysis, results::Results};

/// Bumped whenever a field of the sweep document changes meaning or goes.
pub const REPORT_SCHEMA_VERSION: u32 = 1;

pub struct Json;

#[derive(Serialize)]
struct SweepReport<'a> {
    report_schema_version: u32,
    results: &'a Results,
    analysis: &'a Analysis,
}

/// One step of a ruleset: what to run and what to feed it.
#[derive(Serialize)]
struct ToolInput<'a> {
    tool: &'static str,
    args: Vec<String>,
    input: &'a str,
}

impl Exporter for Json {
    fn serves(&self, kind: DocumentKind) -> bool {
        kind != DocumentKind::Advice
    }

    fn export(&self, document: &Document) -> Result<Vec<u8>> {
        let mut bytes = match document {
            Document::Sweep { results, analysis } => serde_json::to_vec_pretty(&SweepReport {
                report_schema_version: REPORT_SCHEMA_VERSION,
                results,
                analysis,
            })?,
            Document::Trace(report) => serde_json::to_vec_pretty(report)?,
            Document::Detection(detection) => serde_json::to_vec_pretty(detection)?,
            Document::Bench(report) => serde_json::to_vec_pretty(report)?,
            Document::Rules { steps, .. } => {
                let inputs: Vec<ToolInput> = steps
                    .iter()
                    .map(|s| {
                        let (tool, args) = s.command();
                        ToolInput { tool, args, input: s.input() }
                    })
                    .collect();
                serde_json::to_vec_pretty(&inputs)?
            }
            Document::Advice { .. } => return Err(unsupported(ExportFormat::Json, document.kind())),
        };
        bytes.push(b'\n');
        Ok(bytes)
    }
}
