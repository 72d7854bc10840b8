//! The synthetic cluster every generator renders: N ClusterIP services, each with
//! one port per protocol and E endpoints per service port, addressed as in
//! docs/kube-proxy-rules.md#the-synthetic-cluster and laid out so that N=2, E=2,
//! TCP only reproduces the worked examples of each mode there exactly.
//!
//! Naming and addressing (all derived from the service index k = 1..=N):
//!
//! * namespace `nsK`, service `svcK`;
//! * ClusterIP = `first_cluster_ip + (k - 1)`, by default 172.30.0.41, .42, ...;
//! * one service port per entry of `protocols`, all on `port` (80): the TCP port
//!   is named `p80` (the spec's name) and the UDP port `u80`, because Kubernetes
//!   wants port names unique within a service and kube-proxy makes a separate
//!   KUBE-SVC / `service-` chain for each (name, protocol);
//! * endpoint j (0-based) of service k is the pod `pod_cidr + j * stride + k`
//!   (pod CIDR 10.180.0.0/14 by default), port = the service port. `stride` is
//!   N+1 rounded up to a multiple of 512, so each "endpoint rank" has its own run
//!   of /23 blocks, like pods spread over nodes; for N < 512 that gives
//!   10.180.0.k, 10.180.2.k, ... as in the worked examples. The same pods back every service
//!   port of a service, as in a real Service. A /14 holds about 262,000 pods,
//!   e.g. N=10,000 with E up to 25, or N=65,000 with E up to 4.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Upper bound on endpoints over all service ports (N × ports × E). Beyond this the
/// rulesets (3 iptables rules per endpoint) stop being a plausible cluster and
/// loading them takes minutes.
pub const MAX_TOTAL_ENDPOINTS: u64 = 1_000_000;

/// Pod addresses of different services are interleaved in blocks of this size
/// (a /23), which is what makes N=2 land on 10.180.0.k and 10.180.2.k
/// (docs/kube-proxy-rules.md#iptables-worked-example).
const POD_BLOCK: u64 = 512;

/// Errors for cluster shapes this model cannot build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("a cluster needs at least one service (got 0)")]
    NoServices,
    #[error("each service needs at least one endpoint (got 0)")]
    NoEndpoints,
    #[error("no protocols given: each service needs at least one port")]
    NoProtocols,
    #[error("protocol {0} is listed twice")]
    DuplicateProtocol(Protocol),
    #[error("port 0 is not a usable service port")]
    PortZero,
    #[error(
        "{services} services x {ports} ports x {endpoints} endpoints = {total} endpoints, \
         more than the {max} this generator allows"
    )]
    TooManyEndpoints {
        services: u32,
        ports: usize,
        endpoints: u32,
        total: u64,
        max: u64,
    },
    #[error("first ClusterIP {ip} is not a usable host address in the service CIDR {cidr}")]
    FirstClusterIpOutsideServiceCidr { ip: Ipv4Addr, cidr: Ipv4Cidr },
    #[error(
        "{services} ClusterIPs starting at {first} do not fit in {cidr}: \
         there is room for {room}"
    )]
    ClusterIpsExhausted {
        services: u32,
        first: Ipv4Addr,
        cidr: Ipv4Cidr,
        room: u64,
    },
    #[error("the pod CIDR {pod} is not inside the cluster CIDR {cluster}")]
    PodCidrOutsideClusterCidr { pod: Ipv4Cidr, cluster: Ipv4Cidr },
    #[error(
        "{services} services x {endpoints} endpoints need pod addresses up to \
         {needed} past the start of the pod CIDR {cidr}, which has room for {room}"
    )]
    PodAddressesExhausted {
        services: u32,
        endpoints: u32,
        needed: u64,
        room: u64,
        cidr: Ipv4Cidr,
    },
    #[error("the service CIDR {service} overlaps the cluster CIDR {cluster}")]
    OverlappingCidrs {
        service: Ipv4Cidr,
        cluster: Ipv4Cidr,
    },
    #[error("invalid IPv4 CIDR {text:?}: {reason}")]
    InvalidCidr { text: String, reason: &'static str },
}

/// Transport protocol of a service port, as kube-proxy spells it (lower case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The lower-case name used in chain-name hashes, `-p`, `-m` and nft keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// The port name this model gives a port of this protocol: `p80` for TCP (the
    /// spec's name), `u80` for UDP.
    pub fn port_name(self, port: u16) -> String {
        match self {
            Protocol::Tcp => format!("p{port}"),
            Protocol::Udp => format!("u{port}"),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An IPv4 prefix such as `10.0.0.0/8` (host bits must be zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl Ipv4Cidr {
    pub fn new(network: Ipv4Addr, prefix_len: u8) -> Result<Self, SpecError> {
        let text = || format!("{network}/{prefix_len}");
        if prefix_len > 32 {
            return Err(SpecError::InvalidCidr {
                text: text(),
                reason: "prefix length above 32",
            });
        }
        let cidr = Ipv4Cidr {
            network,
            prefix_len,
        };
        if u32::from(network) & !cidr.mask() != 0 {
            return Err(SpecError::InvalidCidr {
                text: text(),
                reason: "host bits are set",
            });
        }
        Ok(cidr)
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len))
            .unwrap_or(0)
    }

    /// The last address of the prefix (the broadcast address for prefixes < /31).
    pub fn last(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }

    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    /// Whether every address of `other` is in `self`.
    pub fn covers(&self, other: &Ipv4Cidr) -> bool {
        self.contains(other.network) && self.contains(other.last())
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| SpecError::InvalidCidr {
            text: text.to_owned(),
            reason,
        };
        let (addr, len) = text
            .split_once('/')
            .ok_or_else(|| invalid("missing /prefix"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| invalid("not an IPv4 address"))?;
        let len: u8 = len
            .parse()
            .map_err(|_| invalid("prefix length is not a number"))?;
        Ipv4Cidr::new(addr, len)
    }
}

/// What kube-proxy calls a `ServicePortName`: namespace, service and port name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServicePortName {
    pub namespace: String,
    pub service: String,
    pub port_name: String,
}

impl fmt::Display for ServicePortName {
    /// `ns/svc:port`, or `ns/svc` for an unnamed port (`pkg/proxy/types.go`,
    /// docs/kube-proxy-rules.md#iptables-chain-names).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.service)?;
        if !self.port_name.is_empty() {
            write!(f, ":{}", self.port_name)?;
        }
        Ok(())
    }
}

/// One backend address of a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    /// `IP:port`, as Go's `net.JoinHostPort` writes an IPv4 endpoint.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.ip, self.port)
    }
}

/// One (service, port, protocol): the unit kube-proxy makes a chain for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: ServicePortName,
    pub protocol: Protocol,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    /// Sorted as kube-proxy sorts them: by the `"IP:port"` string
    /// (docs/kube-proxy-rules.md#iptables-service-chains), so
    /// 10.0.0.10 comes before 10.0.0.2.
    pub endpoints: Vec<Endpoint>,
}

/// The shape of a synthetic cluster; [`Cluster::new`] validates and expands it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    /// N: number of services.
    pub services: u32,
    /// E: endpoints behind every service port.
    pub endpoints_per_service: u32,
    /// One service port per protocol, in this order. Default: TCP and UDP, so that
    /// probes can use either; use `vec![Protocol::Tcp]` for the spec's examples.
    pub protocols: Vec<Protocol>,
    /// Service port and endpoint (target) port.
    pub port: u16,
    /// The cluster (pod) CIDR kube-proxy's local-traffic detector uses for
    /// `! -s <clusterCIDR>` masquerade rules.
    pub cluster_cidr: Ipv4Cidr,
    /// Where ClusterIPs are allocated; also nftables' "unallocated ClusterIP" drop.
    pub service_cidr: Ipv4Cidr,
    /// ClusterIP of service 1; the rest follow sequentially.
    pub first_cluster_ip: Ipv4Addr,
    /// Where endpoint (pod) addresses are allocated; must lie inside
    /// `cluster_cidr`, or the `! -s <clusterCIDR>` masquerade rules would treat pod
    /// traffic as external.
    pub pod_cidr: Ipv4Cidr,
    /// Seeds every random choice a generator makes (e.g. KUBE-SERVICES order).
    pub seed: u64,
}

impl ClusterSpec {
    /// N services × E endpoints with the defaults of the spec's examples, except
    /// that every service has both a TCP and a UDP port.
    pub fn new(services: u32, endpoints_per_service: u32) -> Self {
        ClusterSpec {
            services,
            endpoints_per_service,
            protocols: vec![Protocol::Tcp, Protocol::Udp],
            port: 80,
            cluster_cidr: Ipv4Cidr {
                network: Ipv4Addr::new(10, 0, 0, 0),
                prefix_len: 8,
            },
            service_cidr: Ipv4Cidr {
                network: Ipv4Addr::new(172, 30, 0, 0),
                prefix_len: 16,
            },
            first_cluster_ip: Ipv4Addr::new(172, 30, 0, 41),
            pod_cidr: Ipv4Cidr {
                network: Ipv4Addr::new(10, 180, 0, 0),
                prefix_len: 14,
            },
            seed: 0,
        }
    }

    pub fn with_protocols(mut self, protocols: Vec<Protocol>) -> Self {
        self.protocols = protocols;
        self
    }

    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Distance between endpoint j and endpoint j+1 of the same service.
    fn pod_stride(&self) -> u64 {
        (u64::from(self.services) + 1).div_ceil(POD_BLOCK) * POD_BLOCK
    }

    fn validate(&self) -> Result<(), SpecError> {
        if self.services == 0 {
            return Err(SpecError::NoServices);
        }
        if self.endpoints_per_service == 0 {
            return Err(SpecError::NoEndpoints);
        }
        if self.protocols.is_empty() {
            return Err(SpecError::NoProtocols);
        }
        for (i, protocol) in self.protocols.iter().enumerate() {
            if self.protocols[..i].contains(protocol) {
                return Err(SpecError::DuplicateProtocol(*protocol));
            }
        }
        if self.port == 0 {
            return Err(SpecError::PortZero);
        }
        let total = u64::from(self.services)
            * self.protocols.len() as u64
            * u64::from(self.endpoints_per_service);
        if total > MAX_TOTAL_ENDPOINTS {
            return Err(SpecError::TooManyEndpoints {
                services: self.services,
                ports: self.protocols.len(),
                endpoints: self.endpoints_per_service,
                total,
                max: MAX_TOTAL_ENDPOINTS,
            });
        }
        if self.service_cidr.overlaps(&self.cluster_cidr) {
            return Err(SpecError::OverlappingCidrs {
                service: self.service_cidr,
                cluster: self.cluster_cidr,
            });
        }

        // ClusterIPs: host addresses only (not the network or broadcast address).
        let first = u64::from(u32::from(self.first_cluster_ip));
        let network = u64::from(u32::from(self.service_cidr.network()));
        let last_usable = u64::from(u32::from(self.service_cidr.last())) - 1;
        if !self.service_cidr.contains(self.first_cluster_ip)
            || first == network
            || first > last_usable
        {
            return Err(SpecError::FirstClusterIpOutsideServiceCidr {
                ip: self.first_cluster_ip,
                cidr: self.service_cidr,
            });
        }
        let room = last_usable - first + 1;
        if u64::from(self.services) > room {
            return Err(SpecError::ClusterIpsExhausted {
                services: self.services,
                first: self.first_cluster_ip,
                cidr: self.service_cidr,
                room,
            });
        }

        // Pods: host addresses of the pod CIDR (offsets 1 .. size-2).
        if !self.cluster_cidr.covers(&self.pod_cidr) {
            return Err(SpecError::PodCidrOutsideClusterCidr {
                pod: self.pod_cidr,
                cluster: self.cluster_cidr,
            });
        }
        let needed = (u64::from(self.endpoints_per_service) - 1) * self.pod_stride()
            + u64::from(self.services);
        let room = u64::from(u32::from(self.pod_cidr.last()))
            - u64::from(u32::from(self.pod_cidr.network()))
            - 1;
        if needed > room {
            return Err(SpecError::PodAddressesExhausted {
                services: self.services,
                endpoints: self.endpoints_per_service,
                needed,
                room,
                cidr: self.pod_cidr,
            });
        }
        Ok(())
    }
}

/// Which kind of address [`Cluster::miss_address`] should return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissTarget {
    /// An address inside the service CIDR that no service uses. In iptables mode
    /// it scans all of KUBE-SERVICES; in nftables mode `cluster-ips-check` drops
    /// new connections to it.
    UnallocatedClusterIp,
    /// A pod address, i.e. ordinary non-service traffic that still reaches a real
    /// backend (it scans all of KUBE-SERVICES in iptables mode,
    /// docs/kube-proxy-rules.md#iptables-service-order).
    PodIp,
}

/// A validated, expanded [`ClusterSpec`]: every service port with its endpoints.
#[derive(Debug, Clone)]
pub struct Cluster {
    spec: ClusterSpec,
    service_ports: Vec<ServicePort>,
}

impl Cluster {
    pub fn new(spec: ClusterSpec) -> Result<Self, SpecError> {
        spec.validate()?;
        let stride = spec.pod_stride();
        let pod_base = u64::from(u32::from(spec.pod_cidr.network()));
        let first_vip = u32::from(spec.first_cluster_ip);
        let mut service_ports = Vec::with_capacity(spec.services as usize * spec.protocols.len());
        for k in 1..=spec.services {
            // Validation bounded every address below 2^32, so these conversions hold.
            let cluster_ip = Ipv4Addr::from(first_vip + (k - 1));
            let mut pods: Vec<Endpoint> = (0..u64::from(spec.endpoints_per_service))
                .map(|j| Endpoint {
                    ip: Ipv4Addr::from((pod_base + j * stride + u64::from(k)) as u32),
                    port: spec.port,
                })
                .collect();
            // kube-proxy's byEndpoint order: the "IP:port" string
            // (docs/kube-proxy-rules.md#iptables-service-chains).
            pods.sort_by_cached_key(|endpoint| endpoint.to_string());
            for &protocol in &spec.protocols {
                service_ports.push(ServicePort {
                    name: ServicePortName {
                        namespace: format!("ns{k}"),
                        service: format!("svc{k}"),
                        port_name: protocol.port_name(spec.port),
                    },
                    protocol,
                    cluster_ip,
                    port: spec.port,
                    endpoints: pods.clone(),
                });
            }
        }
        Ok(Cluster {
            spec,
            service_ports,
        })
    }

    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// Every service port, service by service, ports in `spec.protocols` order.
    pub fn service_ports(&self) -> &[ServicePort] {
        &self.service_ports
    }

    /// Endpoints summed over all service ports (kube-proxy's `totalEndpoints`).
    pub fn total_endpoints(&self) -> usize {
        self.service_ports.iter().map(|sp| sp.endpoints.len()).sum()
    }

    /// The distinct ClusterIPs, in service order.
    pub fn cluster_ips(&self) -> Vec<Ipv4Addr> {
        let first = u32::from(self.spec.first_cluster_ip);
        (0..self.spec.services)
            .map(|i| Ipv4Addr::from(first + i))
            .collect()
    }

    /// An address a "miss" probe can use
    /// (docs/kube-proxy-rules.md#the-synthetic-cluster). `None` only for
    /// [`MissTarget::UnallocatedClusterIp`] when the services fill the whole CIDR.
    pub fn miss_address(&self, target: MissTarget) -> Option<Ipv4Addr> {
        match target {
            MissTarget::UnallocatedClusterIp => {
                let cidr = self.spec.service_cidr;
                let first = u32::from(self.spec.first_cluster_ip);
                let after_last = first + self.spec.services;
                if after_last < u32::from(cidr.last()) {
                    Some(Ipv4Addr::from(after_last))
                } else if first - 1 > u32::from(cidr.network()) {
                    Some(Ipv4Addr::from(first - 1))
                } else {
                    None
                }
            }
            MissTarget::PodIp => self
                .service_ports
                .first()
                .and_then(|sp| sp.endpoints.first())
                .map(|endpoint| endpoint.ip),
        }
    }
}

/// SplitMix64 (Steele, Lea and Flood 2014): a tiny seedable generator, enough to
/// shuffle rule order reproducibly without pulling in a `rand` dependency.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform value in `0..bound` (`bound` > 0), by Lemire's multiply-shift with
    /// rejection, so there is no modulo bias.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "SplitMix64::below needs a positive bound");
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let product = u128::from(self.next_u64()) * u128::from(bound);
            if (product as u64) >= threshold {
                return (product >> 64) as u64;
            }
        }
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_example() -> Cluster {
        Cluster::new(ClusterSpec::new(2, 2).with_protocols(vec![Protocol::Tcp])).unwrap()
    }

    #[test]
    fn two_by_two_matches_the_spec_addresses() {
        let cluster = spec_example();
        let ports = cluster.service_ports();
        assert_eq!(ports.len(), 2);
        assert_eq!(ports[0].name.to_string(), "ns1/svc1:p80");
        assert_eq!(ports[0].cluster_ip, Ipv4Addr::new(172, 30, 0, 41));
        assert_eq!(ports[1].cluster_ip, Ipv4Addr::new(172, 30, 0, 42));
        let eps: Vec<String> = ports[0].endpoints.iter().map(|e| e.to_string()).collect();
        assert_eq!(eps, ["10.180.0.1:80", "10.180.2.1:80"]);
        let eps: Vec<String> = ports[1].endpoints.iter().map(|e| e.to_string()).collect();
        assert_eq!(eps, ["10.180.0.2:80", "10.180.2.2:80"]);
    }

    #[test]
    fn default_has_a_tcp_and_a_udp_port_per_service() {
        let cluster = Cluster::new(ClusterSpec::new(3, 2)).unwrap();
        let names: Vec<String> = cluster
            .service_ports()
            .iter()
            .map(|sp| format!("{} {}", sp.name, sp.protocol))
            .collect();
        assert_eq!(
            names,
            [
                "ns1/svc1:p80 tcp",
                "ns1/svc1:u80 udp",
                "ns2/svc2:p80 tcp",
                "ns2/svc2:u80 udp",
                "ns3/svc3:p80 tcp",
                "ns3/svc3:u80 udp"
            ]
        );
        assert_eq!(cluster.total_endpoints(), 12);
        assert_eq!(cluster.cluster_ips().len(), 3);
    }

    #[test]
    fn endpoints_sort_as_strings() {
        // With 12 endpoints, 10.180.x.1 for x = 0, 2, ..., 22: "10.180.10.1"
        // sorts before "10.180.2.1".
        let cluster =
            Cluster::new(ClusterSpec::new(1, 12).with_protocols(vec![Protocol::Tcp])).unwrap();
        let eps: Vec<String> = cluster.service_ports()[0]
            .endpoints
            .iter()
            .map(|e| e.to_string())
            .collect();
        let mut sorted = eps.clone();
        sorted.sort();
        assert_eq!(eps, sorted);
        assert_eq!(eps[0], "10.180.0.1:80");
        assert_eq!(eps[1], "10.180.10.1:80");
    }

    #[test]
    fn all_addresses_are_distinct_and_in_range_for_65000_services() {
        let spec = ClusterSpec::new(65_000, 2).with_protocols(vec![Protocol::Tcp]);
        assert!(Cluster::new(ClusterSpec::new(65_000, 4)).is_ok());
        assert!(matches!(
            Cluster::new(ClusterSpec::new(65_000, 5)),
            Err(SpecError::PodAddressesExhausted { .. })
        ));
        let cluster = Cluster::new(spec.clone()).unwrap();
        let mut pods: Vec<u32> = cluster
            .service_ports()
            .iter()
            .flat_map(|sp| sp.endpoints.iter().map(|e| u32::from(e.ip)))
            .collect();
        assert!(pods
            .iter()
            .all(|&ip| spec.pod_cidr.contains(Ipv4Addr::from(ip))));
        assert!(spec.cluster_cidr.covers(&spec.pod_cidr));
        pods.sort_unstable();
        pods.dedup();
        assert_eq!(pods.len(), 130_000);
        let vips = cluster.cluster_ips();
        assert!(vips.iter().all(|&ip| spec.service_cidr.contains(ip)));
        assert_eq!(*vips.last().unwrap(), Ipv4Addr::new(172, 30, 254, 16));
    }

    #[test]
    fn rejects_out_of_range_shapes() {
        assert_eq!(
            Cluster::new(ClusterSpec::new(0, 1)).unwrap_err(),
            SpecError::NoServices
        );
        assert_eq!(
            Cluster::new(ClusterSpec::new(1, 0)).unwrap_err(),
            SpecError::NoEndpoints
        );
        assert_eq!(
            Cluster::new(ClusterSpec::new(1, 1).with_protocols(vec![])).unwrap_err(),
            SpecError::NoProtocols
        );
        assert_eq!(
            Cluster::new(ClusterSpec::new(1, 1).with_protocols(vec![Protocol::Udp, Protocol::Udp]))
                .unwrap_err(),
            SpecError::DuplicateProtocol(Protocol::Udp)
        );
        assert!(matches!(
            Cluster::new(ClusterSpec::new(65_495, 1).with_protocols(vec![Protocol::Tcp])),
            Err(SpecError::ClusterIpsExhausted { room: 65_494, .. })
        ));
        assert!(
            Cluster::new(ClusterSpec::new(65_494, 1).with_protocols(vec![Protocol::Tcp])).is_ok()
        );
        assert!(matches!(
            Cluster::new(ClusterSpec::new(1000, 1001)),
            Err(SpecError::TooManyEndpoints {
                total: 2_002_000,
                ..
            })
        ));
        assert!(matches!(
            Cluster::new(ClusterSpec::new(1, 1_000_000).with_protocols(vec![Protocol::Tcp])),
            Err(SpecError::PodAddressesExhausted { .. })
        ));
        let mut spec = ClusterSpec::new(1, 1);
        spec.first_cluster_ip = Ipv4Addr::new(172, 30, 0, 0);
        assert!(matches!(
            Cluster::new(spec),
            Err(SpecError::FirstClusterIpOutsideServiceCidr { .. })
        ));
        let mut spec = ClusterSpec::new(1, 1);
        spec.service_cidr = "10.96.0.0/12".parse().unwrap();
        spec.first_cluster_ip = Ipv4Addr::new(10, 96, 0, 10);
        assert!(matches!(
            Cluster::new(spec),
            Err(SpecError::OverlappingCidrs { .. })
        ));
        let mut spec = ClusterSpec::new(1, 1);
        spec.pod_cidr = "11.0.0.0/16".parse().unwrap();
        assert!(matches!(
            Cluster::new(spec),
            Err(SpecError::PodCidrOutsideClusterCidr { .. })
        ));
    }

    #[test]
    fn cidr_parsing() {
        let cidr: Ipv4Cidr = "172.30.0.0/16".parse().unwrap();
        assert_eq!(cidr.last(), Ipv4Addr::new(172, 30, 255, 255));
        assert!(cidr.contains(Ipv4Addr::new(172, 30, 9, 9)));
        assert!(!cidr.contains(Ipv4Addr::new(172, 31, 0, 0)));
        assert!("172.30.0.1/16".parse::<Ipv4Cidr>().is_err());
        assert!("172.30.0.0/33".parse::<Ipv4Cidr>().is_err());
        assert!("172.30.0.0".parse::<Ipv4Cidr>().is_err());
        assert_eq!(
            "0.0.0.0/0".parse::<Ipv4Cidr>().unwrap().last(),
            Ipv4Addr::BROADCAST
        );
    }

    #[test]
    fn miss_addresses() {
        let cluster = spec_example();
        assert_eq!(
            cluster.miss_address(MissTarget::UnallocatedClusterIp),
            Some(Ipv4Addr::new(172, 30, 0, 43))
        );
        assert_eq!(
            cluster.miss_address(MissTarget::PodIp),
            Some(Ipv4Addr::new(10, 180, 0, 1))
        );
        let mut spec = ClusterSpec::new(1, 1);
        spec.first_cluster_ip = Ipv4Addr::new(172, 30, 255, 254);
        let cluster = Cluster::new(spec).unwrap();
        assert_eq!(
            cluster.miss_address(MissTarget::UnallocatedClusterIp),
            Some(Ipv4Addr::new(172, 30, 255, 253))
        );
    }

    #[test]
    fn splitmix64_is_reproducible_and_shuffles_fully() {
        // Reference values of SplitMix64 seeded with 1234567.
        let mut rng = SplitMix64::new(1234567);
        assert_eq!(rng.next_u64(), 6457827717110365317);
        assert_eq!(rng.next_u64(), 3203168211198807973);
        let mut items: Vec<u32> = (0..100).collect();
        SplitMix64::new(7).shuffle(&mut items);
        let mut again: Vec<u32> = (0..100).collect();
        SplitMix64::new(7).shuffle(&mut again);
        assert_eq!(items, again);
        assert_ne!(items, (0..100).collect::<Vec<_>>());
        items.sort_unstable();
        assert_eq!(items, (0..100).collect::<Vec<_>>());
    }
}
