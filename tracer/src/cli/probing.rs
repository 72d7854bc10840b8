//! Flags that say how to probe, shared by the commands that attach: each
//! declared once here and flattened into `trace`, `serve` (all of them),
//! `sweep`, `bench` and `selftest` (the mechanism), so their help, names
//! and defaults cannot drift apart.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use tracer::{
    probes::{
        attach::{AttachRequest, BracketFilter, SiteStatus},
        Backend, SiteList, SITES,
    },
    trace::Collection,
};

/// `--backend`: which probe mechanism.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct MechanismArgs {
    /// Probe mechanism: best available per site, or only one kind.
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    pub backend: Backend,
}

/// Which functions to probe, with what, and how their figures reach
/// userspace (`trace`, `serve`).
#[derive(clap::Args, Debug, Clone)]
pub struct ProbeArgs {
    /// Probe sites, comma-separated (nf_hook_slow, ipt_do_table,
    /// nft_do_chain, ip_vs_in, ip_vs_schedule, ip_vs_conn_in_get,
    /// ip_vs_nat_xmit).
    /// Default: all but ip_vs_conn_in_get, skipping those whose module
    /// is not loaded. Named sites must all be available.
    #[arg(long)]
    pub sites: Option<SiteList>,
    #[command(flatten)]
    pub mechanism: MechanismArgs,
    /// Skip measuring the probes' own cost at start-up.
    #[arg(long)]
    pub no_calibrate: bool,
    /// How per-call figures are collected: `events` (one ring-buffer event
    /// per call: exact, with per-packet totals and the transit) or `kernel`
    /// (log-linear histograms in the kernel, read when needed: cheaper per
    /// call, percentiles within ~3%, no per-packet totals). Default for
    /// `trace`: events for runs of --duration 60s or less, kernel for
    /// longer or unbounded runs; for `serve`: kernel, or events with
    /// --egress-device (the transit is a per-packet series).
    #[arg(long, value_enum)]
    pub collect: Option<Collection>,
}

/// Which packets count, from where pathcost runs (`trace`, `serve`).
#[derive(clap::Args, Debug, Clone)]
pub struct PacketFilterArgs {
    /// Keep only packets of this network namespace, given as a path
    /// (/proc/1/ns/net is the host's, /run/netns/NAME a named one).
    #[arg(long)]
    pub netns: Option<PathBuf>,
    /// Ingress device whose packets the tracepoint bracket times (looked
    /// up in pathcost's own namespace); default: every device but lo.
    #[arg(long)]
    pub device: Option<String>,
    /// Also time each forwarded packet's transit: from its arrival on
    /// --device to its departure on this device (net:netif_receive_skb to
    /// net:net_dev_start_xmit of the same skb); `serve` exports it as
    /// pathcost_packet_transit_duration_seconds. Covers packets the node
    /// forwards (to a pod or a remote endpoint); not packets delivered to a
    /// local socket (hostNetwork endpoints) nor those sent by the node
    /// itself.
    #[arg(long, requires = "device")]
    pub egress_device: Option<String>,
}

impl ProbeArgs {
    /// What to attach, with `default` as the collection when --collect is
    /// absent; and the namespace inode to keep calls of (`--netns`).
    pub fn attach_request(
        &self,
        filter: &PacketFilterArgs,
        default: Collection,
    ) -> Result<(AttachRequest, Option<u32>)> {
        let (netns, bracket) = filter.resolve()?;
        let request = AttachRequest {
            sites: self.sites.as_ref().map_or_else(|| SITES.iter().filter(|s| s.default).collect(), |l| l.0.clone()),
            explicit: self.sites.is_some(),
            backend: self.mechanism.backend,
            emit_events: self.collect.unwrap_or(default) == Collection::Events,
            bracket: Some(bracket),
            transit: filter.egress_device.is_some(),
        };
        Ok((request, netns))
    }
}

impl PacketFilterArgs {
    /// The namespace inode (if given) and the tracepoint spans' filter (0
    /// where a flag is absent).
    fn resolve(&self) -> Result<(Option<u32>, BracketFilter)> {
        let netns = self.netns.as_deref().map(netns_inode).transpose()?;
        let filter = BracketFilter {
            ifindex: self.device.as_deref().map(ifindex).transpose()?.unwrap_or(0),
            netns: netns.unwrap_or(0),
            egress_ifindex: self.egress_device.as_deref().map(ifindex).transpose()?.unwrap_or(0),
        };
        Ok((netns, filter))
    }
}

/// Says on stderr which mechanism each site attached with, or why none did.
pub fn announce(sites: &[SiteStatus]) {
    for s in sites {
        eprintln!("pathcost: {} -> {}", s.site, s.mechanism.map_or_else(|| s.notes.join("; "), |m| m.to_string()));
    }
}

/// Interface index of `dev` in pathcost's own network namespace.
fn ifindex(dev: &str) -> Result<u32> {
    let path = format!("/sys/class/net/{dev}/ifindex");
    std::fs::read_to_string(&path)
        .with_context(|| format!("no network device {dev} ({path})"))?
        .trim()
        .parse()
        .with_context(|| format!("unreadable {path}"))
}

/// `NS_GET_NSTYPE` from linux/nsfs.h: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// Inode of a network namespace file, which is what the probes record.
///
/// The file must be a network namespace: any other file has an inode too,
/// and filtering on it would silently measure nothing. The kernel says what
/// a namespace file is (`NS_GET_NSTYPE`); anything else is named by its
/// file type.
fn netns_inode(path: &Path) -> Result<u32> {
    use std::os::fd::AsRawFd as _;
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
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
