//! The terminal table: the report's sections as aligned columns. Warnings
//! are not part of it; the command prints them on stderr, where a terminal
//! user sees them and a pipe does not carry them.

use std::fmt::Write as _;

use anyhow::Result;

use super::{sweep_preamble, sweep_sections, Document, Exporter};
use crate::text::columns;

pub struct Table;

impl Exporter for Table {
    fn export(&self, document: &Document) -> Result<Vec<u8>> {
        Ok(match document {
            Document::Sweep { results, analysis } => {
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
            Document::Trace(report) => crate::report::table::render(report),
        }
        .into_bytes())
    }
}
