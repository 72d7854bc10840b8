//! IPVS mode (docs/kube-proxy-rules.md#ipvs-mode): the four inputs that together rebuild what
//! kube-proxy leaves in a node for a [`Cluster`]: the `kube-ipvs0` dummy device with
//! every ClusterIP on it (`ip -batch`), the ipsets (`ipset restore`), the fixed
//! iptables glue (`iptables-restore`) and the virtual/real servers (`ipvsadm -R`).
//! Per-service state lives only in IPVS and the ipsets; the iptables part does not
//! grow with N.

// Writing to a String cannot fail, so `write!` results are ignored.
use std::fmt::{self, Write as _};
use std::net::Ipv4Addr;
use std::str::FromStr;

use super::cluster::{Cluster, Ipv4Cidr, Protocol};
use super::iptables::{
    write_mangle_table, write_masquerade_rules, KUBE_FIREWALL_RULE, MASQUERADE_MARK,
};

/// The dummy device kube-proxy binds service addresses to.
pub const DUMMY_DEVICE: &str = "kube-ipvs0";

/// kube-proxy's ipset defaults (`hashsize 1024 maxelem 65536`,
/// docs/kube-proxy-rules.md#ipvs-objects).
const IPSET_HASH_SIZE: u32 = 1024;
const IPSET_MAX_ELEM: usize = 65_536;

/// An IPVS scheduler name that `--ipvs-scheduler` accepts. Whether the kernel has
/// the matching `ip_vs_<name>` module is checked elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Scheduler {
    /// Round robin, kube-proxy's default.
    #[default]
    Rr,
    Wrr,
    Lc,
    Wlc,
    Lblc,
    Lblcr,
    Dh,
    Sh,
    Sed,
    Nq,
    Fo,
    Ovf,
    Mh,
    Twos,
}

impl Scheduler {
    pub const ALL: [Scheduler; 14] = [
        Scheduler::Rr,
        Scheduler::Wrr,
        Scheduler::Lc,
        Scheduler::Wlc,
        Scheduler::Lblc,
        Scheduler::Lblcr,
        Scheduler::Dh,
        Scheduler::Sh,
        Scheduler::Sed,
        Scheduler::Nq,
        Scheduler::Fo,
        Scheduler::Ovf,
        Scheduler::Mh,
        Scheduler::Twos,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scheduler::Rr => "rr",
            Scheduler::Wrr => "wrr",
            Scheduler::Lc => "lc",
            Scheduler::Wlc => "wlc",
            Scheduler::Lblc => "lblc",
            Scheduler::Lblcr => "lblcr",
            Scheduler::Dh => "dh",
            Scheduler::Sh => "sh",
            Scheduler::Sed => "sed",
            Scheduler::Nq => "nq",
            Scheduler::Fo => "fo",
            Scheduler::Ovf => "ovf",
            Scheduler::Mh => "mh",
            Scheduler::Twos => "twos",
        }
    }

    /// The kernel module that implements it, e.g. `ip_vs_rr`.
    pub fn kernel_module(self) -> String {
        format!("ip_vs_{}", self.as_str())
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scheduler name outside [`Scheduler::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown IPVS scheduler {0:?}: expected one of rr, wrr, lc, wlc, lblc, lblcr, dh, sh, \
     sed, nq, fo, ovf, mh, twos"
)]
pub struct UnknownScheduler(pub String);

impl FromStr for Scheduler {
    type Err = UnknownScheduler;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Scheduler::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
            .ok_or_else(|| UnknownScheduler(name.to_owned()))
    }
}

/// Choices kube-proxy takes from its flags or the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpvsOptions {
    pub scheduler: Scheduler,
    /// `MASQUERADE --random-fully` in KUBE-POSTROUTING (on when iptables has it).
    pub random_fully: bool,
}

impl Default for IpvsOptions {
    fn default() -> Self {
        IpvsOptions {
            scheduler: Scheduler::Rr,
            random_fully: true,
        }
    }
}

/// Everything IPVS mode needs, in the order to apply it: `ip_batch` (the VIPs must
/// be local before traffic arrives), `ipset_restore` (iptables `-m set` rules refer
/// to the sets by name, so they must exist first), `iptables_restore`, then
/// `ipvsadm_restore`. Also set `net.ipv4.vs.conntrack=1`
/// (docs/kube-proxy-rules.md#ipvs-objects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsRuleset {
    /// For `ip -batch -`.
    pub ip_batch: String,
    /// For `ipset restore`.
    pub ipset_restore: String,
    /// For `iptables-restore` (legacy or nft).
    pub iptables_restore: String,
    /// For `ipvsadm -R`.
    pub ipvsadm_restore: String,
}

/// All four texts for `cluster`.
pub fn ruleset(cluster: &Cluster, options: &IpvsOptions) -> IpvsRuleset {
    IpvsRuleset {
        ip_batch: ip_batch(cluster),
        ipset_restore: ipset_restore(cluster),
        iptables_restore: iptables_restore(cluster.spec().cluster_cidr, options.random_fully),
        ipvsadm_restore: ipvsadm_restore(cluster, options.scheduler),
    }
}

/// The distinct addresses bound to `kube-ipvs0` (one per ClusterIP).
pub fn virtual_ips(cluster: &Cluster) -> Vec<Ipv4Addr> {
    cluster.cluster_ips()
}

/// `ip -batch` input that creates `kube-ipvs0` and binds every VIP as a /32. The
/// device stays DOWN as kube-proxy leaves it; the addresses are local regardless,
/// which sends VIP traffic through INPUT where IPVS hooks in
/// (docs/kube-proxy-rules.md#ipvs-objects).
pub fn ip_batch(cluster: &Cluster) -> String {
    let mut out = format!("link add {DUMMY_DEVICE} type dummy\n");
    for vip in virtual_ips(cluster) {
        let _ = writeln!(out, "addr add {vip}/32 dev {DUMMY_DEVICE}");
    }
    out
}

/// ipvsadm's protocol flag.
fn ipvsadm_protocol(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "-t",
        Protocol::Udp => "-u",
    }
}

/// `ipvsadm -R` input: one virtual server per service port, one masquerading
/// (`-m`) real server of weight 1 per endpoint
/// (docs/kube-proxy-rules.md#ipvs-objects).
pub fn ipvsadm_restore(cluster: &Cluster, scheduler: Scheduler) -> String {
    // kube-proxy sets the source-hash flag (0x10 = IP_VS_SVC_F_SCHED2) for mh,
    // which ipvsadm calls "mh-port".
    let flags = if scheduler == Scheduler::Mh {
        " -b mh-port"
    } else {
        ""
    };
    let mut out =
        String::with_capacity(cluster.total_endpoints() * 48 + cluster.service_ports().len() * 40);
    for sp in cluster.service_ports() {
        let proto = ipvsadm_protocol(sp.protocol);
        let vs = format!("{} {}:{}", proto, sp.cluster_ip, sp.port);
        let _ = writeln!(out, "-A {vs} -s {scheduler}{flags}");
        for ep in &sp.endpoints {
            let _ = writeln!(out, "-a {vs} -r {ep} -m -w 1");
        }
    }
    out
}

/// The kube-proxy ipsets, in the order kube-proxy creates them (`ipsetInfo`), with
/// KUBE-IPVS-IPS (newer versions) last.
const IPSETS: [(&str, &str); 17] = [
    ("KUBE-LOOP-BACK", "hash:ip,port,ip"),
    ("KUBE-CLUSTER-IP", "hash:ip,port"),
    ("KUBE-EXTERNAL-IP", "hash:ip,port"),
    ("KUBE-EXTERNAL-IP-LOCAL", "hash:ip,port"),
    ("KUBE-LOAD-BALANCER", "hash:ip,port"),
    ("KUBE-LOAD-BALANCER-FW", "hash:ip,port"),
    ("KUBE-LOAD-BALANCER-LOCAL", "hash:ip,port"),
    ("KUBE-LOAD-BALANCER-SOURCE-IP", "hash:ip,port,ip"),
    ("KUBE-LOAD-BALANCER-SOURCE-CIDR", "hash:ip,port,net"),
    ("KUBE-NODE-PORT-TCP", "bitmap:port"),
    ("KUBE-NODE-PORT-LOCAL-TCP", "bitmap:port"),
    ("KUBE-NODE-PORT-UDP", "bitmap:port"),
    ("KUBE-NODE-PORT-LOCAL-UDP", "bitmap:port"),
    ("KUBE-NODE-PORT-SCTP-HASH", "hash:ip,port"),
    ("KUBE-NODE-PORT-LOCAL-SCTP-HASH", "hash:ip,port"),
    ("KUBE-HEALTH-CHECK-NODE-PORT", "bitmap:port"),
    ("KUBE-IPVS-IPS", "hash:ip"),
];

/// `ipset restore` input creating every kube-proxy set (`-exist`, as kube-proxy
/// creates them on every sync) and filling KUBE-CLUSTER-IP (`VIP,proto:port`) and
/// KUBE-IPVS-IPS (`VIP`). KUBE-LOOP-BACK stays empty: it holds only endpoints on
/// this node, and synthetic endpoints live in other namespaces.
///
/// Deviation: kube-proxy's fixed `maxelem 65536` cannot hold more than 65,536
/// service ports; beyond that we raise maxelem to the next power of two so large
/// sweeps still load (real kube-proxy would fail to sync there).
pub fn ipset_restore(cluster: &Cluster) -> String {
    let members = cluster.service_ports().len();
    let max_elem = members.next_power_of_two().max(IPSET_MAX_ELEM);
    let mut out = String::with_capacity(2048 + members * 48);
    for (name, set_type) in IPSETS {
        if set_type.starts_with("bitmap:port") {
            let _ = writeln!(out, "create {name} {set_type} range 0-65535 -exist");
        } else {
            let _ = writeln!(
                out,
                "create {name} {set_type} family inet hashsize {IPSET_HASH_SIZE} maxelem {max_elem} -exist"
            );
        }
        match name {
            "KUBE-CLUSTER-IP" => {
                for sp in cluster.service_ports() {
                    let _ = writeln!(
                        out,
                        "add {name} {},{}:{} -exist",
                        sp.cluster_ip, sp.protocol, sp.port
                    );
                }
            }
            "KUBE-IPVS-IPS" => {
                for vip in virtual_ips(cluster) {
                    let _ = writeln!(out, "add {name} {vip} -exist");
                }
            }
            _ => {}
        }
    }
    out
}

/// The iptables rules kube-proxy keeps in IPVS mode
/// (docs/kube-proxy-rules.md#ipvs-iptables-glue) plus
/// kubelet's chains, as one `iptables-restore` input in iptables-save form (see
/// the `iptables` module for why). The ipsets must exist before this loads.
/// Built-in chain jumps are appended in their final order; kube-proxy prepends
/// them, which ends the same from empty chains.
pub fn iptables_restore(cluster_cidr: Ipv4Cidr, random_fully: bool) -> String {
    let mut out = String::from(
        "# kube-proxy IPVS mode iptables glue, synthesised by pathcost (docs/kube-proxy-rules.md#ipvs-iptables-glue).\n",
    );
    // kube-proxy's ipvs proxier has no canary chain of its own; kubelet's stay.
    write_mangle_table(&mut out, false);
    let _ = write!(
        out,
        "*nat\n\
         :KUBE-KUBELET-CANARY - [0:0]\n\
         :KUBE-LOAD-BALANCER - [0:0]\n\
         :KUBE-MARK-MASQ - [0:0]\n\
         :KUBE-NODE-PORT - [0:0]\n\
         :KUBE-POSTROUTING - [0:0]\n\
         :KUBE-SERVICES - [0:0]\n\
         -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
         -A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ\n"
    );
    write_masquerade_rules(&mut out, random_fully);
    // KUBE-SERVICES: every service is one ipset lookup, not one rule per service.
    let _ = write!(
        out,
        "-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN\n\
         -A KUBE-SERVICES ! -s {cluster_cidr} -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" \
         -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ\n\
         -A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT\n\
         -A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT\n\
         COMMIT\n"
    );
    let _ = write!(
        out,
        "*filter\n\
         :KUBE-FIREWALL - [0:0]\n\
         :KUBE-FORWARD - [0:0]\n\
         :KUBE-IPVS-FILTER - [0:0]\n\
         :KUBE-IPVS-OUT-FILTER - [0:0]\n\
         :KUBE-KUBELET-CANARY - [0:0]\n\
         :KUBE-NODE-PORT - [0:0]\n\
         :KUBE-PROXY-FIREWALL - [0:0]\n\
         :KUBE-SOURCE-RANGES-FIREWALL - [0:0]\n\
         -A INPUT -m comment --comment \"kubernetes ipvs access filter\" -j KUBE-IPVS-FILTER\n\
         -A INPUT -m comment --comment \"kube-proxy firewall rules\" -j KUBE-PROXY-FIREWALL\n\
         -A INPUT -m comment --comment \"kubernetes health check rules\" -j KUBE-NODE-PORT\n\
         -A INPUT -j KUBE-FIREWALL\n\
         -A FORWARD -m comment --comment \"kube-proxy firewall rules\" -j KUBE-PROXY-FIREWALL\n\
         -A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n\
         -A OUTPUT -m comment --comment \"kubernetes ipvs access filter\" -j KUBE-IPVS-OUT-FILTER\n\
         -A OUTPUT -j KUBE-FIREWALL\n\
         {KUBE_FIREWALL_RULE}\
         -A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {m}/{m} -j ACCEPT\n\
         -A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         -A KUBE-IPVS-FILTER -m set --match-set KUBE-LOAD-BALANCER dst,dst -j RETURN\n\
         -A KUBE-IPVS-FILTER -m set --match-set KUBE-CLUSTER-IP dst,dst -j RETURN\n\
         -A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP dst,dst -j RETURN\n\
         -A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP-LOCAL dst,dst -j RETURN\n\
         -A KUBE-IPVS-FILTER -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j RETURN\n\
         -A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT --reject-with icmp-port-unreachable\n\
         -A KUBE-NODE-PORT -m comment --comment \"Kubernetes health check node port\" -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT\n\
         -A KUBE-SOURCE-RANGES-FIREWALL -j DROP\n\
         COMMIT\n",
        m = MASQUERADE_MARK
    );
    out
}

#[cfg(test)]
mod tests {
    use super::super::cluster::ClusterSpec;
    use super::super::testing::{self, save_order};
    use super::*;

    const SECTION_2_3_IPVSADM: &str = include_str!("fixtures/ipvsadm_2x2.rules");
    const SECTION_2_3_IPTABLES: &str = include_str!("fixtures/ipvs_iptables_2x2.save");

    fn spec_example() -> Cluster {
        Cluster::new(ClusterSpec::new(2, 2).with_protocols(vec![Protocol::Tcp])).unwrap()
    }

    /// Drops kubelet's chains and rules (and the mangle table, which holds only
    /// kubelet's), which a listing of the glue alone leaves out.
    fn without_kubelet(save: &str) -> String {
        let mut out = String::new();
        let mut in_mangle = false;
        for line in save.lines() {
            if line == "*mangle" {
                in_mangle = true;
            }
            let kubelet = line.split_whitespace().any(|word| {
                matches!(
                    word.trim_start_matches(':'),
                    "KUBE-FIREWALL" | "KUBE-KUBELET-CANARY"
                )
            });
            if !in_mangle && !kubelet {
                out.push_str(line);
                out.push('\n');
            }
            if line == "COMMIT" {
                in_mangle = false;
            }
        }
        out
    }

    /// The upstream listing puts nat before filter; canonical order puts filter first.
    fn section_2_3_in_table_order() -> String {
        save_order(SECTION_2_3_IPTABLES, false)
    }

    #[test]
    fn ipvsadm_text_is_section_2_3() {
        let cluster = spec_example();
        assert_eq!(
            ipvsadm_restore(&cluster, Scheduler::Rr),
            SECTION_2_3_IPVSADM
        );
        let mh = ipvsadm_restore(&cluster, Scheduler::Mh);
        assert!(mh.starts_with("-A -t 172.30.0.41:80 -s mh -b mh-port\n"));
    }

    #[test]
    fn udp_ports_use_dash_u() {
        let cluster = Cluster::new(ClusterSpec::new(1, 1)).unwrap();
        assert_eq!(
            ipvsadm_restore(&cluster, Scheduler::Wrr),
            "-A -t 172.30.0.41:80 -s wrr\n\
             -a -t 172.30.0.41:80 -r 10.180.0.1:80 -m -w 1\n\
             -A -u 172.30.0.41:80 -s wrr\n\
             -a -u 172.30.0.41:80 -r 10.180.0.1:80 -m -w 1\n"
        );
    }

    #[test]
    fn scheduler_names_are_validated() {
        for scheduler in Scheduler::ALL {
            assert_eq!(scheduler.as_str().parse::<Scheduler>(), Ok(scheduler));
        }
        assert_eq!(Scheduler::default(), Scheduler::Rr);
        assert_eq!(Scheduler::Sh.kernel_module(), "ip_vs_sh");
        let err = "maglev".parse::<Scheduler>().unwrap_err();
        assert_eq!(err, UnknownScheduler("maglev".to_owned()));
        assert!(err.to_string().contains("rr, wrr"));
    }

    #[test]
    fn ipset_text_creates_every_set_and_adds_the_members() {
        let text = ipset_restore(&spec_example());
        assert_eq!(
            text.lines().filter(|l| l.starts_with("create ")).count(),
            17
        );
        assert!(text.contains(
            "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 -exist\n\
             add KUBE-CLUSTER-IP 172.30.0.41,tcp:80 -exist\n\
             add KUBE-CLUSTER-IP 172.30.0.42,tcp:80 -exist\n"
        ));
        assert!(text.contains(
            "create KUBE-IPVS-IPS hash:ip family inet hashsize 1024 maxelem 65536 -exist\n\
             add KUBE-IPVS-IPS 172.30.0.41 -exist\n\
             add KUBE-IPVS-IPS 172.30.0.42 -exist\n"
        ));
        assert!(text.contains("create KUBE-LOOP-BACK hash:ip,port,ip family inet hashsize 1024 maxelem 65536 -exist\n"));
        assert!(text.contains("create KUBE-NODE-PORT-TCP bitmap:port range 0-65535 -exist\n"));
        assert!(
            text.contains("create KUBE-HEALTH-CHECK-NODE-PORT bitmap:port range 0-65535 -exist\n")
        );
        assert_eq!(text.lines().filter(|l| l.starts_with("add ")).count(), 4);
    }

    #[test]
    fn ipset_maxelem_grows_past_65536_members() {
        let cluster = Cluster::new(ClusterSpec::new(40_000, 1)).unwrap();
        let text = ipset_restore(&cluster);
        assert!(text.contains(
            "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 131072 -exist\n"
        ));
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("add KUBE-CLUSTER-IP "))
                .count(),
            80_000
        );
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("add KUBE-IPVS-IPS "))
                .count(),
            40_000
        );
    }

    #[test]
    fn iptables_glue_is_section_2_3() {
        let cidr = spec_example().spec().cluster_cidr;
        let text = iptables_restore(cidr, true);
        assert_eq!(
            without_kubelet(&save_order(&text, false)),
            section_2_3_in_table_order()
        );
        // Kubelet's part: hint and canaries, and KUBE-FIREWALL at the bottom of
        // INPUT and OUTPUT.
        let canonical = save_order(&text, false);
        assert!(canonical.contains(":KUBE-IPTABLES-HINT - [0:0]\n"));
        let input = testing::table_lines(&canonical, "filter")
            .into_iter()
            .rfind(|l| l.starts_with("-A INPUT "))
            .unwrap();
        assert_eq!(input, "-A INPUT -j KUBE-FIREWALL");
    }

    #[test]
    fn ip_batch_binds_every_vip() {
        assert_eq!(
            ip_batch(&spec_example()),
            "link add kube-ipvs0 type dummy\n\
             addr add 172.30.0.41/32 dev kube-ipvs0\n\
             addr add 172.30.0.42/32 dev kube-ipvs0\n"
        );
        let cluster = Cluster::new(ClusterSpec::new(3, 1)).unwrap();
        assert_eq!(virtual_ips(&cluster).len(), 3);
    }

    /// Loads the ipsets and then the glue with both iptables backends, in a
    /// throwaway namespace, and checks what ipset and iptables save (root only).
    /// ipvsadm and the dummy device need kernel features (IP_VS, DUMMY) that may be
    /// missing; the `ip -batch` addresses are checked on a veth stand-in instead.
    #[test]
    fn ipsets_and_glue_load_with_both_backends() {
        let cluster = spec_example();
        let rules = ruleset(&cluster, &IpvsOptions::default());
        for backend in ["iptables-legacy", "iptables-nft"] {
            let script = format!(
                "ipset restore < ipsets && {backend}-restore -w 10 rules && \
                 ipset save KUBE-CLUSTER-IP && ipset save KUBE-IPVS-IPS && \
                 echo '#--- iptables' && {backend}-save"
            );
            let Some(run) = testing::run_in_fresh_netns(
                &[
                    "ipset",
                    &format!("{backend}-restore"),
                    &format!("{backend}-save"),
                ],
                &script,
                &[
                    ("ipsets", &rules.ipset_restore),
                    ("rules", &rules.iptables_restore),
                ],
            ) else {
                return;
            };
            let (sets, saved) = run.stdout.split_once("#--- iptables\n").unwrap();
            for member in [
                "add KUBE-CLUSTER-IP 172.30.0.41,tcp:80",
                "add KUBE-CLUSTER-IP 172.30.0.42,tcp:80",
                "add KUBE-IPVS-IPS 172.30.0.41",
                "add KUBE-IPVS-IPS 172.30.0.42",
            ] {
                assert!(
                    sets.lines().any(|l| l == member),
                    "{backend}: {member} missing in\n{sets}"
                );
            }
            assert_eq!(
                without_kubelet(&save_order(saved, false)),
                section_2_3_in_table_order(),
                "{backend}"
            );
            assert_eq!(
                save_order(saved, false),
                save_order(&rules.iptables_restore, false)
            );
        }
    }

    /// Every set type kube-proxy uses exists in the kernel's ipset (root only).
    #[test]
    fn all_ipsets_load() {
        let cluster = Cluster::new(ClusterSpec::new(3, 2)).unwrap();
        let text = ipset_restore(&cluster);
        let Some(run) = testing::run_in_fresh_netns(
            &["ipset"],
            "ipset restore < ipsets && ipset list -n",
            &[("ipsets", &text)],
        ) else {
            return;
        };
        let names: Vec<&str> = run.stdout.lines().collect();
        let expected: Vec<&str> = IPSETS.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, expected);
    }

    /// The `addr add` lines of the `ip -batch` text load (root only). The dummy
    /// link type may be missing from the kernel (CONFIG_DUMMY), so the device is
    /// made as a veth of the same name when `type dummy` is refused.
    #[test]
    fn ip_batch_addresses_load() {
        let cluster = Cluster::new(ClusterSpec::new(300, 1)).unwrap();
        let text = ip_batch(&cluster);
        let Some(run) = testing::run_in_fresh_netns(
            &["ip"],
            "if ! ip -batch batch 2>/dev/null; then \
               echo 'dummy links unavailable: using a veth stand-in' >&2; \
               ip link del kube-ipvs0 2>/dev/null; \
               ip link add kube-ipvs0 type veth peer name kube-ipvs0p && \
               sed 1d batch | ip -batch - || exit 1; \
             fi; ip -4 -o addr show dev kube-ipvs0",
            &[("batch", &text)],
        ) else {
            return;
        };
        if !run.stderr.is_empty() {
            eprintln!("{}", run.stderr.trim());
        }
        assert_eq!(run.stdout.lines().count(), 300);
        assert!(run.stdout.contains("inet 172.30.0.41/32 "));
        assert!(run.stdout.contains("inet 172.30.1.84/32 "));
    }
}
