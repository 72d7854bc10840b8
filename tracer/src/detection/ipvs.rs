//! Reads IPVS mode's footprint (docs/kube-proxy-rules.md#ipvs-mode,
//! docs/kube-proxy-rules.md#reading-a-node): the virtual
//! servers in `/proc/net/ip_vs`, the `kube-ipvs0` dummy device and its
//! addresses (`ip -d -j addr show dev kube-ipvs0`), and kube-proxy's ipsets
//! (`ipset list -n`, `ipset list -t KUBE-CLUSTER-IP`).

use std::net::Ipv4Addr;

use serde::Serialize;
use serde_json::Value;

/// The device kube-proxy binds every ClusterIP to in IPVS mode.
pub const KUBE_IPVS0: &str = "kube-ipvs0";
/// The ipset holding every `ClusterIP,proto:port`: the cleanest count of
/// ClusterIP service ports in IPVS mode (docs/kube-proxy-rules.md#reading-a-node).
pub const CLUSTER_IP_SET: &str = "KUBE-CLUSTER-IP";

/// One IPVS virtual server from `/proc/net/ip_vs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VirtualServer {
    /// `TCP`, `UDP`, `SCTP`, or `FWM` for a firewall-mark service.
    pub protocol: String,
    /// `172.30.0.41:80`, `[fd00::1]:80`, or the mark for `FWM`.
    pub address: String,
    pub scheduler: String,
    pub real_servers: usize,
}

/// Parses `/proc/net/ip_vs`. The kernel prints IPv4 addresses and ports as
/// host-order hex (`AC1E0029:0050`), IPv6 ones bracketed, one line per
/// virtual server followed by `  -> ...` lines for its real servers.
pub fn parse_proc_ip_vs(text: &str) -> Vec<VirtualServer> {
    let mut servers: Vec<VirtualServer> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if first == "->" {
            let addr = words.next().unwrap_or_default();
            // The column header line reads "-> RemoteAddress:Port ...".
            if !addr.starts_with("RemoteAddress") {
                if let Some(vs) = servers.last_mut() {
                    vs.real_servers += 1;
                }
            }
            continue;
        }
        if line.starts_with(' ') || matches!(first, "IP" | "Prot") {
            continue;
        }
        let (Some(addr), Some(scheduler)) = (words.next(), words.next()) else {
            continue;
        };
        let address = if first == "FWM" {
            format!(
                "mark {}",
                u32::from_str_radix(addr, 16).map_or_else(|_| addr.to_owned(), |m| m.to_string())
            )
        } else {
            decode_endpoint(addr).unwrap_or_else(|| addr.to_owned())
        };
        servers.push(VirtualServer {
            protocol: first.to_owned(),
            address,
            scheduler: scheduler.to_owned(),
            real_servers: 0,
        });
    }
    servers
}

/// `AC1E0029:0050` -> `172.30.0.41:80`; `[fd00::1]:0050` -> `[fd00::1]:80`.
fn decode_endpoint(s: &str) -> Option<String> {
    let (addr, port) = s.rsplit_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    if addr.starts_with('[') {
        return Some(format!("{addr}:{port}"));
    }
    let ip = Ipv4Addr::from(u32::from_str_radix(addr, 16).ok()?);
    Some(format!("{ip}:{port}"))
}

/// The `kube-ipvs0` device as `ip -d -j addr show` describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DummyDevice {
    /// Link kind (`dummy` when kube-proxy made it).
    pub kind: Option<String>,
    /// `DOWN` as kube-proxy leaves it.
    pub operstate: Option<String>,
    /// Bound addresses (the VIPs), without prefix length.
    pub addresses: Vec<String>,
}

/// Parses `ip -d -j addr show dev kube-ipvs0` (iproute2), or `ip -o addr
/// show dev kube-ipvs0` where `ip` is busybox's, which has neither `-j`
/// nor `-d` (then the kind and state stay unknown). `None` if the JSON names
/// no such device.
pub fn parse_kube_ipvs0(text: &str) -> Option<DummyDevice> {
    if !text.trim_start().starts_with('[') {
        // "3: kube-ipvs0    inet 172.30.0.41/32 scope global kube-ipvs0\ ..."
        let addresses = text
            .lines()
            .filter_map(|l| {
                let mut words = l
                    .split_whitespace()
                    .skip_while(|w| *w != "inet" && *w != "inet6");
                words.next()?;
                Some(words.next()?.split('/').next()?.to_owned())
            })
            .collect();
        return Some(DummyDevice {
            kind: None,
            operstate: None,
            addresses,
        });
    }
    let links: Value = serde_json::from_str(text).ok()?;
    let link = links
        .as_array()?
        .iter()
        .find(|l| l.get("ifname").and_then(Value::as_str) == Some(KUBE_IPVS0))?;
    let addresses = link
        .get("addr_info")
        .and_then(Value::as_array)
        .map(|addrs| {
            addrs
                .iter()
                .filter_map(|a| a.get("local").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Some(DummyDevice {
        kind: link
            .get("linkinfo")
            .and_then(|i| i.get("info_kind"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        operstate: link
            .get("operstate")
            .and_then(Value::as_str)
            .map(str::to_owned),
        addresses,
    })
}

/// kube-proxy's ipsets (`KUBE-*`, IPv6 ones `KUBE-6-*`) from `ipset list -n`.
pub fn parse_kube_ipset_names(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|n| n.starts_with("KUBE-"))
        .map(str::to_owned)
        .collect()
}

/// "Number of entries: N" from `ipset list -t SET`.
pub fn parse_ipset_entries(text: &str) -> Option<usize> {
    text.lines()
        .find_map(|l| l.strip_prefix("Number of entries:"))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_ip_vs_lists_virtual_and_real_servers() {
        let text = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
TCP  AC1E0029:0050 rr  
  -> 0AB40201:0050      Masq    1      0          0         
  -> 0AB40001:0050      Masq    1      0          0         
UDP  AC1E002A:0035 rr  persistent 10800 FFFFFFFF
FWM  00000010 wrr  
  -> [fd00::1]:0050      Masq    1      0          0         
";
        let vs = parse_proc_ip_vs(text);
        assert_eq!(vs.len(), 3);
        assert_eq!(vs[0].address, "172.30.0.41:80");
        assert_eq!(
            (
                vs[0].protocol.as_str(),
                vs[0].scheduler.as_str(),
                vs[0].real_servers
            ),
            ("TCP", "rr", 2)
        );
        assert_eq!(
            (vs[1].address.as_str(), vs[1].real_servers),
            ("172.30.0.42:53", 0)
        );
        assert_eq!((vs[2].address.as_str(), vs[2].real_servers), ("mark 16", 1));
        assert!(parse_proc_ip_vs("IP Virtual Server version 1.2.1 (size=4096)\n").is_empty());
    }

    #[test]
    fn kube_ipvs0_addresses_and_kind() {
        let json = r#"[{"ifindex":3,"ifname":"kube-ipvs0","flags":["BROADCAST","NOARP"],"operstate":"DOWN","linkinfo":{"info_kind":"dummy"},"addr_info":[{"family":"inet","local":"172.30.0.41","prefixlen":32},{"family":"inet","local":"172.30.0.42","prefixlen":32}]}]"#;
        let d = parse_kube_ipvs0(json).unwrap();
        assert_eq!(d.kind.as_deref(), Some("dummy"));
        assert_eq!(d.operstate.as_deref(), Some("DOWN"));
        assert_eq!(d.addresses, ["172.30.0.41", "172.30.0.42"]);
        assert!(parse_kube_ipvs0("[]").is_none());
        let busybox = "3: kube-ipvs0    inet 172.30.0.41/32 scope global kube-ipvs0\\       valid_lft forever preferred_lft forever\n\
                       3: kube-ipvs0    inet6 fd00::29/128 scope global \\       valid_lft forever preferred_lft forever\n";
        let d = parse_kube_ipvs0(busybox).unwrap();
        assert_eq!(
            (d.kind, d.addresses),
            (None, vec!["172.30.0.41".to_owned(), "fd00::29".to_owned()])
        );
    }

    #[test]
    fn ipset_names_and_entry_counts() {
        assert_eq!(
            parse_kube_ipset_names("KUBE-CLUSTER-IP\nmy-set\nKUBE-6-CLUSTER-IP\n"),
            ["KUBE-CLUSTER-IP", "KUBE-6-CLUSTER-IP"]
        );
        let header = "Name: KUBE-CLUSTER-IP\nType: hash:ip,port\nNumber of entries: 6\n";
        assert_eq!(parse_ipset_entries(header), Some(6));
        assert_eq!(parse_ipset_entries("garbage"), None);
    }
}
