//! `pathcost serve`: keep the probes attached and expose what they measure
//! as Prometheus metrics.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Result;
use tracer::{
    report::Collection,
    detection::{proxy_mode, CollectOptions},
    metrics::{
        http::ListenAddress,
        live::{self, ServeOptions},
    },
    probes::{
        attach::AttachRequest,
        Backend, SiteList, SITES,
    },
    trace::StopSignals,
};

use super::{packet_filter, parse_duration};

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
    /// Probe sites, comma-separated (nf_hook_slow, ipt_do_table,
    /// nft_do_chain, ip_vs_in, ip_vs_schedule, ip_vs_conn_in_get,
    /// ip_vs_nat_xmit).
    /// Default: all but ip_vs_conn_in_get, skipping those whose module
    /// is not loaded. Named sites must all be available.
    #[arg(long)]
    sites: Option<SiteList>,
    /// Probe mechanism: best available per site, or only one kind.
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    backend: Backend,
    /// Skip measuring the probes' own cost at start-up.
    #[arg(long)]
    no_calibrate: bool,
    /// How per-call series are produced: `kernel` (log-linear histograms in
    /// the kernel, read at scrape time: no event per call, percentiles
    /// within ~3%; the per-packet and transit series stay empty) or `events`
    /// (one ring-buffer event per call: exact, with the per-packet series).
    /// Default: kernel, or events with --egress-device (the transit is a
    /// per-packet series).
    #[arg(long, value_enum)]
    collect: Option<Collection>,
    /// Keep only packets of this network namespace, given as a path
    /// (/proc/1/ns/net is the host's, /run/netns/NAME a named one).
    #[arg(long)]
    netns: Option<PathBuf>,
    /// Ingress device whose packets the tracepoint bracket times (looked
    /// up in pathcost's own namespace); default: every device but lo.
    #[arg(long)]
    device: Option<String>,
    /// Also export each forwarded packet's transit
    /// (pathcost_packet_transit_duration_seconds): from its arrival on
    /// --device to its departure on this device. It covers packets the
    /// node forwards (to pods or remote endpoints), not those delivered to
    /// local sockets (hostNetwork endpoints) nor those the node sends.
    #[arg(long, requires = "device")]
    egress_device: Option<String>,
    /// How often to re-read kube-proxy's mode, backend and service counts
    /// (e.g. 60s, 5m); 0 reads them once at start-up.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    refresh: Duration,
    /// kube-proxy's metrics address to ask for /proxyMode ("none" skips
    /// asking).
    #[arg(long, default_value = proxy_mode::DEFAULT_METRICS_ADDRESS, value_parser = parse_kube_proxy_address)]
    kube_proxy_address: KubeProxyAddress,
}

#[derive(Clone, Copy, Debug)]
struct KubeProxyAddress(Option<SocketAddr>);

fn parse_kube_proxy_address(s: &str) -> Result<KubeProxyAddress, String> {
    if s == "none" {
        return Ok(KubeProxyAddress(None));
    }
    s.parse()
        .map(|a| KubeProxyAddress(Some(a)))
        .map_err(|_| format!("'{s}' is not an address such as 127.0.0.1:10249 or [::1]:10249 (or 'none')"))
}

pub async fn run(args: Args) -> Result<()> {
    let mut signals = StopSignals::install()?;
    let explicit = args.sites.is_some();
    let sites = args.sites.map_or_else(|| SITES.iter().filter(|s| s.default).collect(), |l| l.0);
    let (netns, bracket) =
        packet_filter(args.netns.as_deref(), args.device.as_deref(), args.egress_device.as_deref())?;
    let options = ServeOptions {
        request: AttachRequest {
            sites,
            explicit,
            backend: args.backend,
            emit_events: args.collect.unwrap_or(if args.egress_device.is_some() {
                Collection::Events
            } else {
                Collection::Kernel
            }) == Collection::Events,
            bracket: Some(bracket),
            transit: args.egress_device.is_some(),
        },
        calibrate: !args.no_calibrate,
        netns,
        refresh: (!args.refresh.is_zero()).then_some(args.refresh),
        detection: CollectOptions { metrics_address: args.kube_proxy_address.0, ..CollectOptions::default() },
    };
    let listener = live::bind(args.listen.0).await?;
    let address = listener.local_addr().unwrap_or(args.listen.0);
    let summary = live::serve(listener, options, signals.or_after(None), |sites| {
        for s in sites {
            eprintln!("pathcost: {} -> {}", s.site, s.mechanism.map_or_else(|| s.notes.join("; "), |m| m.to_string()));
        }
        eprintln!("pathcost: serving metrics on http://{address}/metrics");
    })
    .await?;
    eprintln!("pathcost: stopped after {} events; every probe is detached", summary.events);
    Ok(())
}
