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
/// Where service VIPs are allocated (see `cluster::ClusterSpec`).
pub const SERVICE_CIDR: &str = "172.30.0.0/16";
/// Where endpoint (pod) addresses live; the backend owns all of it.
pub const POD_CIDR: &str = "10.180.0.0/14";
// Locally administered MACs, fixed so neighbours can be static.
const MAC_CLIENT: &str = "02:70:63:00:00:02";
const MAC_NODE_CLIENT_SIDE: &str = "02:70:63:00:00:01";
const MAC_NODE_BACKEND_SIDE: &str = "02:70:63:00:01:01";
const MAC_BACKEND: &str = "02:70:63:00:01:02";
/// Node-side interface names, to filter traffic by device.
pub const NODE_INGRESS_DEV: &str = "to-client";
pub const NODE_EGRESS_DEV: &str = "to-backend";

pub struct Topology {
    pub client: NetNs,
    pub node: NetNs,
    pub backend: NetNs,
    /// Client source ports handed out so far (see `traffic::new_connections`):
    /// conntrack lives in the node namespace, so ports need only be fresh
    /// within one topology, across all of its traffic phases.
    pub(crate) source_ports_used: std::sync::atomic::AtomicU32,
}

impl Topology {
    /// What the tracepoint spans should time: packets arriving at the node
    /// from the client (the bracket), and leaving it towards the backend
    /// (the transit).
    pub fn bracket_filter(&self) -> Result<crate::probes::attach::BracketFilter> {
        Ok(crate::probes::attach::BracketFilter {
            ifindex: self.node.ifindex(NODE_INGRESS_DEV)?,
            netns: self.node.inode()?,
            egress_ifindex: self.node.ifindex(NODE_EGRESS_DEV)?,
        })
    }

    pub fn build() -> Result<Topology> {
        let client = NetNs::new("client")?;
        let node = NetNs::new("node")?;
        let backend = NetNs::new("backend")?;
        // IPv4 only: IPv6 neighbour discovery and router solicitations on
        // new links would be packets in the measurements.
        for ns in [&client, &node, &backend] {
            if std::path::Path::new("/proc/sys/net/ipv6").exists() {
                ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
                ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
            }
        }

        let (ctid, btid) = (client.tid().to_string(), backend.tid().to_string());
        let veth = |dev: &str, mac: &str, peer_mac: &str, peer_ns: &str| {
            node.cmd(
                "ip",
                &["link", "add", dev, "address", mac, "type", "veth", "peer", "name", "eth0", "address", peer_mac, "netns", peer_ns],
            )
        };
        veth(NODE_INGRESS_DEV, MAC_NODE_CLIENT_SIDE, MAC_CLIENT, &ctid).context("creating the client veth pair")?;
        veth(NODE_EGRESS_DEV, MAC_NODE_BACKEND_SIDE, MAC_BACKEND, &btid).context("creating the backend veth pair")?;

        let addr = |ip: Ipv4Addr| format!("{ip}/24");
        node.cmd("ip", &["addr", "add", &addr(NODE_CLIENT_SIDE), "dev", NODE_INGRESS_DEV])?;
        node.cmd("ip", &["addr", "add", &addr(NODE_BACKEND_SIDE), "dev", NODE_EGRESS_DEV])?;
        node.cmd("ip", &["link", "set", NODE_INGRESS_DEV, "up"])?;
        node.cmd("ip", &["link", "set", NODE_EGRESS_DEV, "up"])?;
        node.cmd("ip", &["route", "add", POD_CIDR, "via", &BACKEND_ADDR.to_string()])?;
        node.sysctl("net.ipv4.ip_forward", "1")?;
        // Traffic to service addresses that nothing claims ("miss" traffic)
        // ends here silently, instead of an ICMP error that would be one
        // more packet in the measurements.
        node.cmd("ip", &["route", "add", "blackhole", SERVICE_CIDR])?;

        client.cmd("ip", &["addr", "add", &addr(CLIENT_ADDR), "dev", "eth0"])?;
        client.cmd("ip", &["link", "set", "eth0", "up"])?;
        client.cmd("ip", &["route", "add", "default", "via", &NODE_CLIENT_SIDE.to_string()])?;

        backend.cmd("ip", &["addr", "add", &addr(BACKEND_ADDR), "dev", "eth0"])?;
        backend.cmd("ip", &["link", "set", "eth0", "up"])?;
        backend.cmd("ip", &["route", "add", "default", "via", &NODE_BACKEND_SIDE.to_string()])?;
        // Answer for every pod address without adding thousands of them.
        backend.cmd("ip", &["route", "add", "local", POD_CIDR, "dev", "lo"])?;

        // Permanent neighbours: no ARP traffic in the measurements, and no
        // packets dropped from a full queue while the first ARP resolves.
        let neigh = |ns: &NetNs, ip: Ipv4Addr, mac: &str, dev: &str| {
            ns.cmd("ip", &["neigh", "replace", &ip.to_string(), "lladdr", mac, "dev", dev, "nud", "permanent"])
        };
        neigh(&client, NODE_CLIENT_SIDE, MAC_NODE_CLIENT_SIDE, "eth0")?;
        neigh(&node, CLIENT_ADDR, MAC_CLIENT, NODE_INGRESS_DEV)?;
        neigh(&node, BACKEND_ADDR, MAC_BACKEND, NODE_EGRESS_DEV)?;
        neigh(&backend, NODE_BACKEND_SIDE, MAC_NODE_BACKEND_SIDE, "eth0")?;

        Ok(Topology { client, node, backend, source_ports_used: 0.into() })
    }
}
