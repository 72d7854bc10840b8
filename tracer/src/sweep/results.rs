//! The sweep's results file: one documented, versioned JSON document.
//! Values are in base units (ns, ms) and only formatted on output.
//!
//! ```text
//! {
//!   "schema_version": 1,
//!   "tool": "pathcost 0.1.0",
//!   "kernel": "6.12.117+deb12-amd64",
//!   "settings": { modes, services, endpoints, connections, ... },
//!   "skipped": [ { "mode": "ipvs", "reason": "..." } ],
//!   "interrupted": false,
//!   "points": [ {
//!     "mode": "iptables-legacy",  "services": 1000,  "endpoints": 2,
//!     "service_ports": 2000,      "backend": "kprobe",
//!     "kernel": "...",            "program_ms": 812.4,
//!     "transit_new_connection":     { "count", "mean_ns", "p50_ns", "p90_ns", "p99_ns", "max_ns" },
//!     "transit_established_packet": { ... },
//!     "lookup_new_connection": { "what": "ipt_do_table nat/PREROUTING",
//!                                "mechanism": "kprobe", "count", "mean_ns", ... } | null,
//!     "sites": [ { "site", "hook", "table", "chain", "count", "mean_ns",
//!                  "p50_ns", "p90_ns", "p99_ns", "max_ns",
//!                  "exclusive": {...}, "inclusive_corrected": {...},
//!                  "exclusive_corrected": {...} } ],
//!     "per_new_connection":     { "count", "mean_ns", "p50_ns", "p90_ns", "p99_ns", "max_ns" },
//!     "per_new_connection_raw": { ... },
//!     "per_established_packet": { ... },  "per_established_packet_raw": { ... },
//!     "per_miss_packet":        { ... },  "per_miss_packet_raw": { ... },
//!     "traffic": { "new_connections", "miss_packets", "established_packets" },
//!     "losses": { ... },  "self_cost": [ ... ]
//!   } ]
//! }
//! ```
//!
//! `interrupted` is true when SIGINT or SIGTERM stopped the sweep before
//! its last point: `points` then holds only the points finished before it.
//! Files written before the field existed read as not interrupted.
//!
//! `transit_*` is the one span measured the same way in every mode: from a
//! forwarded packet's arrival on the node's client-facing device
//! (`net:netif_receive_skb`) to the same skb's departure on its
//! backend-facing device (`net:net_dev_start_xmit`), taken in a phase with
//! only those two tracepoints attached. It is the figure to compare modes by.
//!
//! `lookup_new_connection` is, per new connection, the call in which the
//! mode finds the service and backend (`what` names it; see
//! `Mode::lookup`), from the probed phase. IPVS's excludes the transmit it
//! does from inside its hook. `null` with the bracket backend, which cannot
//! isolate it.
//!
//! `per_*` figures are the netfilter time one packet spent in the node
//! namespace, summed over the hooks it traversed (nested hooks counted
//! once), for packets of that traffic phase: corrected for the probes' own
//! cost, and as measured (`_raw`).

use serde::{Deserialize, Serialize};

use crate::{
    collection::{calibration::SelfCost, Losses},
    probes::{Backend, Mechanism},
    report::SiteRow,
    statistics::Summary,
    synthesis::program::Mode,
};

/// 2 added the transit and lookup figures (version 1 files read without them).
pub const SCHEMA_VERSION: u32 = 2;

#[derive(Clone, Debug, Serialize)]
pub struct SweepSettings {
    pub modes: Vec<Mode>,
    pub services: Vec<u32>,
    pub endpoints: u32,
    pub protocols: Vec<&'static str>,
    pub connections: u32,
    pub miss: u32,
    pub established_flows: u32,
    pub packets_per_flow: u32,
    pub ipvs_scheduler: &'static str,
    pub backend: Backend,
    pub rate: u32,
    pub seed: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    pub mode: Mode,
    pub reason: String,
}

/// What was sent in each phase.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct TrafficCounts {
    pub new_connections: u64,
    pub miss_packets: u64,
    pub established_packets: u64,
    /// Sent in the transit-only phase.
    #[serde(default)]
    pub transit_new_connections: u64,
    #[serde(default)]
    pub transit_established_packets: u64,
}

/// The lookup of a new connection, named for what it is in this mode.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LookupFigure {
    /// The call, e.g. `nft_do_chain kube-proxy chain nat-prerouting (PREROUTING)`.
    pub what: String,
    pub mechanism: Mechanism,
    #[serde(flatten)]
    pub summary: Summary,
}

#[derive(Clone, Debug, Serialize)]
pub struct Point {
    pub mode: Mode,
    pub services: u32,
    pub endpoints: u32,
    /// Service ports programmed (services × protocols): what kube-proxy
    /// and its rule counts are about.
    pub service_ports: u32,
    /// Mechanisms that produced the numbers, e.g. `fentry+kprobe`.
    pub backend: String,
    pub kernel: String,
    /// Wall time to program the rules (control-plane cost).
    pub program_ms: f64,
    /// Transit per forwarded packet, with only the transit tracepoints
    /// attached: the like-for-like figure across modes.
    pub transit_new_connection: Summary,
    pub transit_established_packet: Summary,
    /// Per new connection, the call that finds the service (raw).
    pub lookup_new_connection: Option<LookupFigure>,
    pub sites: Vec<SiteRow>,
    /// Corrected for the probes' own cost (see `self_cost`); `_raw` as
    /// measured.
    pub per_new_connection: Summary,
    pub per_new_connection_raw: Summary,
    pub per_established_packet: Summary,
    pub per_established_packet_raw: Summary,
    pub per_miss_packet: Summary,
    pub per_miss_packet_raw: Summary,
    pub traffic: TrafficCounts,
    pub losses: Losses,
    pub self_cost: Vec<SelfCost>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SweepResults {
    pub schema_version: u32,
    pub tool: String,
    pub kernel: String,
    pub settings: SweepSettings,
    pub skipped: Vec<Skipped>,
    pub points: Vec<Point>,
    /// A signal stopped the sweep before its last point.
    pub interrupted: bool,
}
