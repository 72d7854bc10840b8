//! The `pathcost` command line: one module per subcommand, each with its
//! flags (defined once, so help and validation come from one place) and the
//! function that runs it; flags several commands share are declared once
//! and flattened in ([`probing`], [`ruleset`]); helpers shared by several
//! live here. Every command that writes a report picks its exporters the
//! same two ways, `--format` and `--export FORMAT=PATH`
//! ([`tracer::report`]).

pub mod advise;
pub mod bench;
pub mod detect;
pub mod probing;
pub mod report;
pub mod rules;
pub mod ruleset;
pub mod selftest;
pub mod serve;
pub mod sweep;
pub mod trace;

use std::{ffi::OsStr, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{
    builder::{PossibleValue, PossibleValuesParser, TypedValueParser},
    ValueEnum as _,
};
use tracer::report::{DocumentKind, ExportFormat, ExportTarget};

/// Parses `500ms`, `30s`, `5m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (examples: 500ms, 30s, 5m)"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("unknown unit '{unit}' in '{s}' (use ms, s, m or h)")),
    };
    if !secs.is_finite() || !(0.0..=7.0 * 86400.0).contains(&secs) {
        return Err(format!("'{s}' is out of range (0 to 7 days)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// kube-proxy's metrics address, where `detect` and `serve` ask for
/// /proxyMode; `None` ("none" on the command line): do not ask.
#[derive(Clone, Copy, Debug)]
pub struct KubeProxyAddress(pub Option<SocketAddr>);

pub fn parse_kube_proxy_address(s: &str) -> Result<KubeProxyAddress, String> {
    if s == "none" {
        return Ok(KubeProxyAddress(None));
    }
    s.parse()
        .map(|a| KubeProxyAddress(Some(a)))
        .map_err(|_| format!("'{s}' is not an address such as 127.0.0.1:10249 or [::1]:10249 (or 'none')"))
}

/// `--format` of a command whose report is a `kind` of document: the
/// formats that can render it, each listed in `--help` with what it gives;
/// any other is refused before anything runs (exit 2).
#[derive(Clone, Copy, Debug)]
pub struct FormatOf(pub DocumentKind);

impl FormatOf {
    fn possible(self) -> Vec<PossibleValue> {
        self.0.formats().into_iter().filter_map(|f| f.to_possible_value()).collect()
    }
}

impl TypedValueParser for FormatOf {
    type Value = ExportFormat;

    fn parse_ref(&self, cmd: &clap::Command, arg: Option<&clap::Arg>, value: &OsStr) -> Result<ExportFormat, clap::Error> {
        let name = PossibleValuesParser::new(self.possible()).parse_ref(cmd, arg, value)?;
        name.parse().map_err(|e: String| clap::Error::raw(clap::error::ErrorKind::InvalidValue, e + "\n"))
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(self.possible().into_iter()))
    }
}

/// `--export FORMAT=PATH` of a command whose report is a `kind`: a format
/// that cannot render it is refused before anything runs (exit 2).
pub fn export_target_of(kind: DocumentKind) -> impl Fn(&str) -> Result<ExportTarget, String> + Clone + Send + Sync + 'static {
    move |s| {
        let target: ExportTarget = s.parse()?;
        kind.check(target.format)?;
        Ok(target)
    }
}

/// A command's outputs in the order they are written: `--format` to
/// `--output` (stdout when absent), then every `--export`.
pub fn targets(format: ExportFormat, output: Option<PathBuf>, exports: Vec<ExportTarget>) -> Vec<ExportTarget> {
    let main = match output {
        Some(path) => ExportTarget { format, path },
        None => ExportTarget::stdout(format),
    };
    std::iter::once(main).chain(exports).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_reject_garbage() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("9999h").is_err());
    }
}
