//! `pathcost detect`: what this node runs and what its kernel allows.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::{Context as _, Result};
use tracer::detection::{self, proxy_mode, CollectOptions};

use super::{check_outputs, write_output};

/// Show kube-proxy's mode, the iptables backend, the service and endpoint
/// counts and the kernel's probing capabilities of this node.
///
/// The mode comes from kube-proxy's /proxyMode answer when it gives one
/// (300 ms timeouts), otherwise from the node's own state: iptables chains
/// (both backends), the kube-proxy nftables table, kube-ipvs0, IPVS virtual
/// servers and ipsets. State another mode left behind is reported as a
/// leftover. The kernel part tells which of BTF, kprobes, fentry, the
/// bracket tracepoints, IPVS and netfilter BPF links are there, and for
/// each probe site whether it resolves and which mechanism would attach.
/// Only reads: runs the node's own tools in listing mode, never loads a
/// module or a BPF program. Works without kube-proxy (reports none) and
/// without root (reports what it could not read).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Write the result here instead of stdout ("-" is stdout).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// kube-proxy's metrics address to ask for /proxyMode ("none" skips
    /// asking).
    #[arg(long, default_value = proxy_mode::DEFAULT_METRICS_ADDRESS, value_parser = parse_metrics_address)]
    metrics_address: MetricsAddress,
}

/// Output formats of `detect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Clone, Copy, Debug)]
struct MetricsAddress(Option<SocketAddr>);

fn parse_metrics_address(s: &str) -> Result<MetricsAddress, String> {
    if s == "none" {
        return Ok(MetricsAddress(None));
    }
    s.parse().map(|a| MetricsAddress(Some(a))).map_err(|_| {
        format!("'{s}' is not an address such as 127.0.0.1:10249 or [::1]:10249 (or 'none')")
    })
}

pub async fn run(args: Args) -> Result<()> {
    // Before detection runs the node's tools and asks kube-proxy.
    check_outputs(args.output.as_deref(), &[])?;
    let options = CollectOptions {
        metrics_address: args.metrics_address.0,
        ..CollectOptions::default()
    };
    // Collection runs the node's tools and waits on them.
    let detection = tokio::task::spawn_blocking(move || detection::detect_with(&options))
        .await
        .context("detection thread failed")??;
    let text = match args.format {
        Format::Table => detection::table::render(&detection),
        Format::Json => serde_json::to_string_pretty(&detection)? + "\n",
    };
    write_output(&text, args.output.as_deref())
}
