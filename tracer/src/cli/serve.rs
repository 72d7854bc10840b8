//! `pathcost serve`: keep the probes attached and expose what they measure
//! as Prometheus metrics.

use std::time::Duration;

use anyhow::Result;
use tracer::{
    detection::{proxy_mode, CollectOptions},
    metrics::{
        http::ListenAddress,
        live::{self, ServeOptions},
    },
    trace::{Collection, StopSignals},
};

use super::{
    parse_duration, parse_kube_proxy_address,
    probing::{announce, PacketFilterArgs, ProbeArgs},
};

/// Keep the probes attached and serve Prometheus metrics.
///
/// Answers GET /metrics (Prometheus text, or OpenMetrics when the scraper
/// asks for it), /healthz (probes attached, ring reader polling, detection
/// running) and /readyz (also: detection succeeded recently) on --listen. Exports per-call histograms by
/// probe site, netfilter hook and table/chain (raw and corrected for the
/// probes' own cost), the kernel's own histograms, per-packet netfilter
/// time, every loss counter, the probes' own cost, and what `pathcost
/// detect` finds about the node (kube-proxy mode, iptables backend,
/// service and endpoint counts), refreshed every --refresh. Runs until
/// SIGTERM or Ctrl-C, then stops serving and detaches everything. Changes
/// nothing on the node.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address and port to serve metrics on: IP:PORT, or [IP]:PORT for
    /// either family (the DaemonSet passes [$(NODE_IP)]:9470, the node's
    /// own address from the downward API; 0.0.0.0:9470 is every interface).
    #[arg(long, default_value = "127.0.0.1:9470")]
    listen: ListenAddress,
    #[command(flatten)]
    probes: ProbeArgs,
    #[command(flatten)]
    filter: PacketFilterArgs,
    /// How often to re-read kube-proxy's mode, backend and service counts
    /// (e.g. 60s, 5m); 0 reads them once at start-up.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    refresh: Duration,
    /// kube-proxy's metrics address to ask for /proxyMode ("none" skips
    /// asking).
    #[arg(long, default_value = proxy_mode::DEFAULT_METRICS_ADDRESS, value_parser = parse_kube_proxy_address)]
    kube_proxy_address: super::KubeProxyAddress,
}

pub async fn run(args: Args) -> Result<()> {
    let mut signals = StopSignals::install()?;
    let collection = if args.filter.egress_device.is_some() { Collection::Events } else { Collection::Kernel };
    let (request, netns) = args.probes.attach_request(&args.filter, collection)?;
    let options = ServeOptions {
        request,
        calibrate: !args.probes.no_calibrate,
        netns,
        refresh: (!args.refresh.is_zero()).then_some(args.refresh),
        detection: CollectOptions { metrics_address: args.kube_proxy_address.0, ..CollectOptions::default() },
    };
    let listener = live::bind(args.listen.0).await?;
    let address = listener.local_addr().unwrap_or(args.listen.0);
    let summary = live::serve(listener, options, signals.or_after(None), |sites| {
        announce(sites);
        eprintln!("pathcost: serving metrics on http://{address}/metrics");
    })
    .await?;
    eprintln!("pathcost: stopped after {} events; every probe is detached", summary.events);
    Ok(())
}
