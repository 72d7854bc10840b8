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

use std::{path::Path, time::Duration};

use anyhow::{bail, Context as _, Result};
use tracer::report::export::ExportTarget;

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

/// `NS_GET_NSTYPE` from linux/nsfs.h: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// What `trace` and `serve` filter packets by, from their `--netns`,
/// `--device` and `--egress-device`: the namespace inode (if given) and
/// the tracepoint spans' filter (0 where a flag is absent).
pub fn packet_filter(
    netns: Option<&Path>,
    device: Option<&str>,
    egress_device: Option<&str>,
) -> Result<(Option<u32>, tracer::probes::attach::BracketFilter)> {
    let netns = netns.map(netns_inode).transpose()?;
    let filter = tracer::probes::attach::BracketFilter {
        ifindex: device.map(ifindex).transpose()?.unwrap_or(0),
        netns: netns.unwrap_or(0),
        egress_ifindex: egress_device.map(ifindex).transpose()?.unwrap_or(0),
    };
    Ok((netns, filter))
}

/// Inode of a network namespace file, which is what the probes record.
///
/// The file must be a network namespace: any other file has an inode too,
/// and filtering on it would silently measure nothing. The kernel says what
/// a namespace file is (`NS_GET_NSTYPE`); anything else is named by its
/// file type.
pub fn netns_inode(path: &Path) -> Result<u32> {
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
    use std::os::fd::AsRawFd as _;
    let shown = path.display();
    let file = std::fs::File::open(path).with_context(|| format!("cannot open network namespace {shown}"))?;
    let meta = file.metadata().with_context(|| format!("cannot open network namespace {shown}"))?;
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the open
    // descriptor; on a file that is not a namespace it fails with ENOTTY.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
    if kind < 0 {
        let t = meta.file_type();
        let what = if t.is_dir() {
            "a directory"
        } else if t.is_file() {
            "a regular file"
        } else if t.is_socket() {
            "a socket"
        } else if t.is_fifo() {
            "a pipe"
        } else if t.is_char_device() || t.is_block_device() {
            "a device"
        } else {
            "not a namespace file"
        };
        bail!("--netns {shown} is {what}, not a network namespace (give /proc/PID/ns/net or /run/netns/NAME)");
    }
    if kind != libc::CLONE_NEWNET {
        let what = match kind {
            libc::CLONE_NEWNS => "mount",
            libc::CLONE_NEWPID => "PID",
            libc::CLONE_NEWUTS => "UTS",
            libc::CLONE_NEWIPC => "IPC",
            libc::CLONE_NEWUSER => "user",
            libc::CLONE_NEWCGROUP => "cgroup",
            libc::CLONE_NEWTIME => "time",
            _ => "another kind of",
        };
        bail!("--netns {shown} is a {what} namespace, not a network namespace (give /proc/PID/ns/net or /run/netns/NAME)");
    }
    u32::try_from(meta.ino()).with_context(|| format!("--netns {shown}: inode {} does not fit the probes' 32 bits", meta.ino()))
}

/// Writes `text` to `output` atomically, or to stdout when it is `None` or `-`.
pub fn write_output(text: &str, output: Option<&Path>) -> Result<()> {
    tracer::output::write_file(output.unwrap_or(Path::new("-")), text.as_bytes())
}

/// Checks, before any work starts, that `output` and every `--export`
/// target can be written, so a long run is not lost to a typo at its end.
pub fn check_outputs(output: Option<&Path>, exports: &[ExportTarget]) -> Result<()> {
    output.map_or(Ok(()), tracer::output::check_file)?;
    tracer::report::export::check_targets(exports)
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
