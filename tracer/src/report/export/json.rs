//! JSON: the results exactly as read plus the analysis, so one file holds
//! both the measurements and what was concluded from them. A trace exports
//! its report as `pathcost trace --format json` prints it.

use anyhow::Result;
use serde::Serialize;

use super::{Document, Exporter};
use crate::{analysis::Analysis, results::Results};

/// Bumped whenever a field of this document changes meaning or goes.
pub const REPORT_SCHEMA_VERSION: u32 = 1;

pub struct Json;

#[derive(Serialize)]
struct SweepReport<'a> {
    report_schema_version: u32,
    results: &'a Results,
    analysis: &'a Analysis,
}

impl Exporter for Json {
    fn export(&self, document: &Document) -> Result<Vec<u8>> {
        let mut bytes = match document {
            Document::Sweep { results, analysis } => serde_json::to_vec_pretty(&SweepReport {
                report_schema_version: REPORT_SCHEMA_VERSION,
                results,
                analysis,
            })?,
            Document::Trace(report) => serde_json::to_vec_pretty(report)?,
        };
        bytes.push(b'\n');
        Ok(bytes)
    }
}
