//! `pathcost detect`: what this node runs and what its kernel allows.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use tracer::{
    detection::{self, proxy_mode, CollectOptions},
    report::{check_targets, export_all, Document, DocumentKind, ExportFormat, ExportTarget},
};

use super::{export_target_of, parse_kube_proxy_address, targets, FormatOf, KubeProxyAddress};

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
    /// Format of the result.
    #[arg(long, value_parser = FormatOf(DocumentKind::Detection), default_value = "table")]
    format: ExportFormat,
    /// Write the result here instead of stdout ("-" is stdout).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Also write FORMAT (table, json) to PATH ("-" is stdout);
    /// repeatable, e.g. --export json=node.json.
    #[arg(long, value_name = "FORMAT=PATH", value_parser = export_target_of(DocumentKind::Detection))]
    export: Vec<ExportTarget>,
    /// kube-proxy's metrics address to ask for /proxyMode ("none" skips
    /// asking).
    #[arg(long, default_value = proxy_mode::DEFAULT_METRICS_ADDRESS, value_parser = parse_kube_proxy_address)]
    metrics_address: KubeProxyAddress,
}

pub async fn run(args: Args) -> Result<()> {
    // Before detection runs the node's tools and asks kube-proxy.
    let targets = targets(args.format, args.output, args.export);
    check_targets(DocumentKind::Detection, &targets)?;
    let options = CollectOptions {
        metrics_address: args.metrics_address.0,
        ..CollectOptions::default()
    };
    // Collection runs the node's tools and waits on them.
    let detection = tokio::task::spawn_blocking(move || detection::detect_with(&options))
        .await
        .context("detection thread failed")??;
    export_all(&Document::Detection(&detection), &targets)
}
