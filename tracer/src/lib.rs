//! pathcost: measures, inside the kernel, what a packet pays to find its
//! Kubernetes service under kube-proxy's iptables, IPVS or nftables mode.
//!
//! The modules follow the pipeline: what the kernel can do
//! ([`capabilities`]) -> attaching probes ([`probes`]) -> reading their events
//! ([`collection`]) -> statistics ([`statistics`]) -> output ([`report`]).
//! [`results`] is the sweep's results file, written by [`sweep`] and read by
//! [`analysis`], which turns it into fits, crossovers and advice.
//! Beside it: [`detection`] reads what the node runs; [`synthesis`] builds
//! kube-proxy-shaped clusters in private network namespaces ([`netns`]);
//! [`trace`] runs a measuring session, [`sweep`] measures cost against the
//! number of services per mode, [`bench`] measures pathcost itself, and
//! [`metrics`] exposes a live session to Prometheus; [`output`] checks and
//! writes the files they produce, and [`text`] lays out their tables.

pub mod analysis;
pub mod bench;
pub mod bpftrace;
pub mod capabilities;
pub mod collection;
pub mod detection;
pub mod metrics;
pub mod netns;
pub mod output;
pub mod probes;
pub mod report;
pub mod results;
pub mod selftest;
pub mod statistics;
pub mod sweep;
pub mod synthesis;
pub mod text;
pub mod trace;
