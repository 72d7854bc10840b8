//! pathcost: measures, inside the kernel, what a packet pays to find its
//! Kubernetes service under kube-proxy's iptables, IPVS or nftables mode.
//!
//! The modules follow the pipeline: what the kernel can do
//! ([`capabilities`]) -> attaching probes ([`probes`]) -> reading their events
//! ([`collection`]) -> statistics ([`statistics`]) -> output ([`report`]).
//! Beside it: [`synthesis`] builds kube-proxy-shaped clusters in private
//! network namespaces ([`netns`]); [`trace`] runs a measuring session and
//! [`sweep`] measures cost against the number of services per mode.

pub mod bench;
pub mod capabilities;
pub mod collection;
pub mod netns;
pub mod probes;
pub mod report;
pub mod selftest;
pub mod statistics;
pub mod sweep;
pub mod synthesis;
pub mod trace;
