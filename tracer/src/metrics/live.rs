//! `pathcost serve` from start to end: attach and calibrate the probes,
//! feed every call into the metrics, answer scrapes, refresh the node
//! detection, and on shutdown stop serving and detach everything.
//!
//! It starts from the same [`LiveProbes`] as a trace session; the
//! difference is that every call is handed to the metrics as it arrives
//! (a Session keeps calls in its own statistics).

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use tokio::{net::TcpListener, sync::watch};
use super::{health::Health, http, node, CostMetrics, ProbeRun};
use crate::{
    detection::CollectOptions,
    probes::attach::{AttachRequest, SiteStatus},
    trace::LiveProbes,
};

/// What `serve` attaches, and how it describes the node.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub request: AttachRequest,
    /// Measure the probes' own cost at start-up.
    pub calibrate: bool,
    /// Keep only calls in this network namespace (inode); `None`: all.
    pub netns: Option<u32>,
    /// Re-run node detection this often; `None`: once at start-up.
    pub refresh: Option<Duration>,
    pub detection: CollectOptions,
}

/// What a finished `serve` did, for its last words.
#[derive(Clone, Debug)]
pub struct ServeSummary {
    /// Ring-buffer records read after start-up (other namespaces' calls
    /// included).
    pub events: u64,
    pub sites: Vec<SiteStatus>,
}

/// Binds `addr` first, so a taken port fails before anything is loaded.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        // The common mistake (a second serve, or another exporter on the
        // port) gets a hint; every other cause keeps the OS's words.
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            ": the port is taken (another pathcost serve, or another program); pick another with --listen"
        } else {
            ""
        };
        anyhow::anyhow!("cannot listen on {addr}: {e}{hint}")
    })
}

/// Serves metrics on `listener` until `stop` completes, then detaches.
/// `on_attached` sees the site outcomes once the probes are live.
pub async fn serve(
    listener: TcpListener,
    opts: ServeOptions,
    stop: impl Future<Output = ()>,
    on_attached: impl FnOnce(&[SiteStatus]),
) -> Result<ServeSummary> {
    let node = Arc::new(node::NodeSlot::default());
    let health = Arc::new(Health::new(Arc::clone(&node), opts.refresh));
    // Answer health checks at once: while attaching (and calibrating,
    // seconds on a slow node) they say so with a 503, which the kubelet's
    // start-up probe waits through.
    let endpoints = Arc::new(http::Endpoints::new(Arc::clone(&health)));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let server = tokio::spawn(http::serve(listener, Arc::clone(&endpoints), shutdown_rx));
    // Detection runs beside attaching; its first answer usually lands
    // before the first scrape.
    let refresher = node::Refresher::spawn(Arc::clone(&node), opts.detection.clone(), opts.refresh)
        .context("failed to start the node detection thread")?;
    // Attaching (and calibrating, a second or more under emulation) runs
    // on a blocking thread so that a SIGTERM meanwhile is already heard;
    // what it attached is then dropped, detaching it, as soon as it is done.
    let attaching = {
        let opts = opts.clone();
        tokio::task::spawn_blocking(move || LiveProbes::start(&opts.request, opts.calibrate))
    };
    tokio::pin!(stop);
    // `None`: stopped before the probes were attached.
    let started = tokio::select! {
        started = attaching => Some(started.context("the attaching thread failed").and_then(|s| s)),
        () = &mut stop => None,
    };
    let live = match started {
        Some(Ok(live)) => live,
        stopped_or_failed => {
            let _ = shutdown.send(true);
            let _ = server.await;
            return match stopped_or_failed {
                Some(Err(e)) => Err(e),
                _ => Ok(ServeSummary { events: 0, sites: Vec::new() }),
            };
        }
    };
    let LiveProbes { probes, maps, mut events, aggregating, corrections } = live;
    let sites = probes.sites.clone();
    let run = ProbeRun {
        kernel: probes.kernel.release.clone(),
        sites: sites.clone(),
        corrections,
        netns: opts.netns,
        aggregating,
    };
    let metrics = Arc::new(CostMetrics::new(run, Box::new(maps), node));
    endpoints.set_metrics(Arc::clone(&metrics));
    // Healthy from here: the reader loop starts below, and its first poll
    // is due within milliseconds. Before `on_attached`, so whoever learns
    // of the attachment from it finds /healthz already saying so.
    health.set_attached(&sites);
    health.reader_polled();
    on_attached(&sites);

    let mut received = 0u64;
    let collected: Result<()> = loop {
        tokio::select! {
            batch = events.next_batch(|call| {
                received += 1;
                metrics.record(&call);
            }) => {
                if let Err(e) = batch {
                    break Err(e.context("reading the probes' ring buffer"));
                }
                // Every poll, events or not: /healthz's "ring reader".
                health.reader_polled();
                metrics.set_undecodable(events.undecodable);
            }
            () = &mut stop => break Ok(()),
        }
    };

    // Stop answering before the probes go, so no scrape sees a half-torn
    // state; then detach everything (dropping the programs' links and
    // perf events) and stop refreshing.
    let _ = shutdown.send(true);
    let _ = server.await;
    drop(events);
    drop(probes);
    drop(refresher);
    collected?;
    Ok(ServeSummary { events: received, sites })
}
