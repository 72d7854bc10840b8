//! The `pathcost` command line: one module per subcommand, each with its
//! flags (defined once, so help and validation come from one place) and the
//! function that runs it; helpers shared by several live here.

pub mod advise;
pub mod bench;
pub mod detect;
pub mod report;
pub mod rules;
pub mod ruleset;
pub mod selftest;
pub mod serve;
pub mod sweep;
pub mod trace;

use std::{io::Write as _, path::Path, time::Duration};

use anyhow::{Context as _, Result};

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

/// Interface index of `dev` in pathcost's own network namespace.
pub fn ifindex(dev: &str) -> Result<u32> {
    let path = format!("/sys/class/net/{dev}/ifindex");
    std::fs::read_to_string(&path)
        .with_context(|| format!("no network device {dev} ({path})"))?
        .trim()
        .parse()
        .with_context(|| format!("unreadable {path}"))
}

/// Inode of a network namespace file, which is what the probes record.
pub fn netns_inode(path: &Path) -> Result<u32> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot open network namespace {}", path.display()))?;
    u32::try_from(meta.ino()).with_context(|| format!("{} is not a namespace file", path.display()))
}

/// Writes `text` to `output`, or stdout when it is `None` or `-`.
pub fn write_output(text: &str, output: Option<&Path>) -> Result<()> {
    match output {
        Some(p) if p.as_os_str() != "-" => {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("failed to create {}", dir.display()))?;
            }
            std::fs::write(p, text).with_context(|| format!("failed to write {}", p.display()))
        }
        _ => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
            Ok(())
        }
    }
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
