//! Synthesis: kube-proxy-shaped rulesets for N services × E endpoints, built as
//! the text inputs of the standard tools (`iptables-restore`, `ipset restore`,
//! `ipvsadm -R`, `ip -batch`, `nft -f`) so that a sweep can load them into a
//! private network namespace and measure lookup cost against N. The structure
//! follows docs/kube-proxy-rules.md. The generators only return text; loading it is
//! the caller's job.
//!
//! * [`cluster`]: the service/endpoint model and its addressing.
//! * [`names`]: kube-proxy's hashed chain names.
//! * [`iptables`], [`ipvs`], [`nftables`]: one generator per proxy mode.
//! * [`topology`]: the namespaces the rules are loaded into.

pub mod cluster;
pub mod iptables;
pub mod ipvs;
pub mod names;
pub mod nftables;
pub mod program;
pub mod topology;
pub mod traffic;

#[cfg(test)]
mod testing;

pub use cluster::{
    Cluster, ClusterSpec, Endpoint, Ipv4Cidr, MissTarget, Protocol, ServicePort,
    ServicePortName, SpecError, SplitMix64,
};
pub use ipvs::{Scheduler, UnknownScheduler};
pub use names::ChainName;
