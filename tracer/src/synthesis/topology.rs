//! The synthetic cluster's wiring: client -> node -> backend network
//! namespaces joined by veth pairs. kube-proxy-shaped rules go into the
//! node namespace; the client opens connections to service VIPs; the
//! backend answers for every endpoint address.
//!
//! ```text
//!  client                node                         backend
//!  eth0 192.168.0.2 ---- to-client 192.168.0.1
//!                        to-backend 192.168.1.1 ---- eth0 192.168.1.2
//!                        (forwarding on)              local 10.180.0.0/14 on lo
//! ```
//!
//! All three are [`NetNs`]: bound to this process, gone when it exits.

use std::net::Ipv4Addr;

use anyhow::{Context as _, Result};

use crate::netns::NetNs;

pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 2);
pub const NODE_CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
pub const NODE_BACKEND_SIDE: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
pub const BACKEND_ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);
/// Where endpoint (pod) addresses live; the backend owns all of it.
pub const POD_CIDR: &str = "10.180.0.0/14";
/// Node-side interface names, to filter traffic by device.
pub const NODE_INGRESS_DEV: &str = "to-client";
pub const NODE_EGRESS_DEV: &str = "to-backend";

pub struct Topology {
    pub client: NetNs,
    pub node: NetNs,
    pub backend: NetNs,
}

impl Topology {
    pub fn build() -> Result<Topology> {
        let client = NetNs::new("client")?;
        let node = NetNs::new("node")?;
        let backend = NetNs::new("backend")?;

        let (ctid, btid) = (client.tid().to_string(), backend.tid().to_string());
        node.cmd("ip", &["link", "add", NODE_INGRESS_DEV, "type", "veth", "peer", "name", "eth0", "netns", &ctid])
            .context("creating the client veth pair")?;
        node.cmd("ip", &["link", "add", NODE_EGRESS_DEV, "type", "veth", "peer", "name", "eth0", "netns", &btid])
            .context("creating the backend veth pair")?;

        let addr = |ip: Ipv4Addr| format!("{ip}/24");
        node.cmd("ip", &["addr", "add", &addr(NODE_CLIENT_SIDE), "dev", NODE_INGRESS_DEV])?;
        node.cmd("ip", &["addr", "add", &addr(NODE_BACKEND_SIDE), "dev", NODE_EGRESS_DEV])?;
        node.cmd("ip", &["link", "set", NODE_INGRESS_DEV, "up"])?;
        node.cmd("ip", &["link", "set", NODE_EGRESS_DEV, "up"])?;
        node.cmd("ip", &["route", "add", POD_CIDR, "via", &BACKEND_ADDR.to_string()])?;
        node.sysctl("net.ipv4.ip_forward", "1")?;

        client.cmd("ip", &["addr", "add", &addr(CLIENT_ADDR), "dev", "eth0"])?;
        client.cmd("ip", &["link", "set", "eth0", "up"])?;
        client.cmd("ip", &["route", "add", "default", "via", &NODE_CLIENT_SIDE.to_string()])?;

        backend.cmd("ip", &["addr", "add", &addr(BACKEND_ADDR), "dev", "eth0"])?;
        backend.cmd("ip", &["link", "set", "eth0", "up"])?;
        backend.cmd("ip", &["route", "add", "default", "via", &NODE_BACKEND_SIDE.to_string()])?;
        // Answer for every pod address without adding thousands of them.
        backend.cmd("ip", &["route", "add", "local", POD_CIDR, "dev", "lo"])?;

        Ok(Topology { client, node, backend })
    }
}
