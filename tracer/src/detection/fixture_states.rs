//! Detection judged on stored node states (`fixtures/`, one directory per
//! state), on states collected live from throwaway network namespaces, and
//! on this machine's own root namespace, which must come out unchanged.
//!
//! The fixtures are real tool output: `regenerate_fixtures` loads the
//! synthesis generators' rules for a 3-service × 2-endpoint cluster (TCP
//! and UDP ports: 6 service ports, 12 endpoints, 3 ClusterIPs) into private
//! namespaces and stores what [`state::collect`] reads there. IPVS and
//! dummy devices are missing on the capture host, so `ip_vs` and
//! `kube-ipvs0.json` are written from the kernel's and iproute2's output
//! formats instead (docs/kube-proxy-rules.md#ipvs-worked-example).

use std::{fmt::Write as _, path::PathBuf};

use super::{
    analyse, state, Backends, Confidence, IptablesFlavour, KubeProxyMode, ModeSource, NodeFindings,
    NodeState,
};
use crate::{
    netns::NetNs,
    synthesis::{
        cluster::{Cluster, ClusterSpec},
        iptables::{restore_input, IptablesOptions},
        ipvs::{ipset_restore, iptables_restore as ipvs_iptables_restore},
        nftables::nft_input,
    },
};

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/detection/fixtures")
}

fn fixture(name: &str) -> NodeFindings {
    let state = NodeState::load_dir(&fixtures_dir().join(name)).unwrap();
    analyse(&state)
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn skip(test: &str, why: &str) {
    eprintln!("skipped {test}: {why}");
}

// ---- Fixture states -------------------------------------------------------

/// `iptables-nft` with one rule iptables 1.8.9 cannot represent (a
/// `numgen` DNAT map added with `nft`, as a newer writer might leave):
/// iptables-nft-save then prints no chain of the nat table at all. The
/// captured output must not read as "0 services".
#[test]
fn a_table_iptables_nft_save_cannot_print_is_unreadable_not_empty() {
    let f = fixture("iptables-nft-version-skew");
    assert_eq!(f.unreadable.len(), 1, "{:?}", f.unreadable);
    assert_eq!(f.unreadable[0].input, "iptables-nft rules");
    assert!(f.unreadable[0].reason.contains("iptables-nft-save cannot print table(s) nat"), "{:?}", f.unreadable);
    assert!(f.notes.iter().any(|n| n.starts_with("iptables-nft rules unreadable:")), "{:?}", f.notes);
    for t in &f.services.iptables {
        assert_eq!(t.unreadable_tables, ["nat"], "{t:?}");
    }
    // The readable fixture it was made from has none of this.
    assert!(fixture("iptables-nft").unreadable.is_empty());
}

#[test]
fn iptables_mode_on_the_nft_backend() {
    let f = fixture("iptables-nft");
    assert_eq!(f.proxy_mode.mode, Some(KubeProxyMode::Iptables));
    assert_eq!(f.proxy_mode.source, ModeSource::NodeState);
    assert_eq!(f.proxy_mode.confidence, Confidence::High);
    assert!(
        f.proxy_mode.endpoint.contains("nothing answers"),
        "{}",
        f.proxy_mode.endpoint
    );
    let b = &f.iptables_backend;
    assert_eq!(b.legacy_tables, Some(vec![]));
    assert_eq!(
        b.nft_tables,
        Some(vec!["filter".into(), "mangle".into(), "nat".into()])
    );
    assert_eq!(
        (b.kube_proxy_chains_in, b.kubelet_hint_in),
        (Backends::Nft, Backends::Nft)
    );
    assert_eq!(
        (b.wrapper_choice, b.active),
        (IptablesFlavour::Nft, Some(IptablesFlavour::Nft))
    );
    let [ipt] = f.services.iptables.as_slice() else {
        panic!("{:?}", f.services)
    };
    assert_eq!(ipt.backend, IptablesFlavour::Nft);
    assert_eq!(
        (ipt.rules.service_ports, ipt.rules.endpoint_chains),
        (6, 12)
    );
    assert_eq!(
        (ipt.rules.cluster_ip_rules, ipt.rules.kube_services_rules),
        (6, 7)
    );
    assert!(f.services.ipvs.is_none() && f.services.nftables.is_empty());
    assert!(f.leftovers.is_empty(), "{:?}", f.leftovers);
    assert!(f.notes.is_empty(), "{:?}", f.notes);
}

#[test]
fn iptables_mode_on_the_legacy_backend() {
    let f = fixture("iptables-legacy");
    assert_eq!(f.proxy_mode.mode, Some(KubeProxyMode::Iptables));
    let b = &f.iptables_backend;
    assert_eq!(
        b.legacy_tables,
        Some(vec!["nat".into(), "filter".into(), "mangle".into()])
    );
    assert_eq!(b.nft_tables, Some(vec![]));
    assert_eq!(
        (b.kube_proxy_chains_in, b.kubelet_hint_in),
        (Backends::Legacy, Backends::Legacy)
    );
    assert_eq!(
        (b.wrapper_choice, b.active),
        (IptablesFlavour::Legacy, Some(IptablesFlavour::Legacy))
    );
    let [ipt] = f.services.iptables.as_slice() else {
        panic!("{:?}", f.services)
    };
    assert_eq!(
        (
            ipt.backend,
            ipt.rules.service_ports,
            ipt.rules.endpoint_chains
        ),
        (IptablesFlavour::Legacy, 6, 12)
    );
    assert!(f.leftovers.is_empty(), "{:?}", f.leftovers);
}

#[test]
fn ipvs_mode_counts_virtual_servers_vips_and_the_cluster_ip_set() {
    let f = fixture("ipvs");
    assert_eq!(f.proxy_mode.mode, Some(KubeProxyMode::Ipvs));
    assert_eq!(f.proxy_mode.confidence, Confidence::High);
    assert_eq!(f.iptables_backend.active, Some(IptablesFlavour::Nft));
    let v = f.services.ipvs.as_ref().unwrap();
    assert_eq!((v.virtual_servers, v.real_servers), (Some(6), Some(12)));
    let dev = v.kube_ipvs0.as_ref().unwrap();
    assert_eq!(
        (dev.kind.as_deref(), dev.addresses.len()),
        (Some("dummy"), 3)
    );
    assert_eq!(v.cluster_ip_set_entries, Some(6));
    assert_eq!(v.ipsets.len(), 17);
    // IPVS mode's iptables glue has no per-service chains.
    let [ipt] = f.services.iptables.as_slice() else {
        panic!("{:?}", f.services)
    };
    assert_eq!((ipt.rules.service_ports, ipt.rules.endpoint_chains), (0, 0));
    assert!(f.leftovers.is_empty(), "{:?}", f.leftovers);
}

#[test]
fn nftables_mode_beside_kubelets_iptables_chains() {
    let f = fixture("nftables");
    assert_eq!(f.proxy_mode.mode, Some(KubeProxyMode::Nftables));
    assert_eq!(f.proxy_mode.confidence, Confidence::High);
    let [t] = f.services.nftables.as_slice() else {
        panic!("{:?}", f.services)
    };
    assert_eq!(t.family, "ip");
    assert_eq!((t.service_chains, t.endpoint_chains), (6, 12));
    assert_eq!(
        (
            t.service_ips_elements,
            t.service_ips_service_gotos,
            t.cluster_ips
        ),
        (Some(6), Some(6), Some(3))
    );
    // kubelet's chains are not kube-proxy's: no iptables services, no leftovers.
    assert!(f.services.iptables.is_empty());
    assert_eq!(f.iptables_backend.kube_proxy_chains_in, Backends::None);
    assert_eq!(f.iptables_backend.kubelet_hint_in, Backends::Nft);
    assert!(f.leftovers.is_empty(), "{:?}", f.leftovers);
}

#[test]
fn ipvs_to_iptables_switch_leaves_kube_ipvs0_ipsets_and_virtual_servers() {
    let f = fixture("ipvs-to-iptables");
    assert_eq!(f.proxy_mode.mode, Some(KubeProxyMode::Iptables));
    assert_eq!(f.proxy_mode.confidence, Confidence::Medium);
    let stale: Vec<_> = f
        .leftovers
        .iter()
        .map(|l| (l.mode, l.what.as_str()))
        .collect();
    assert_eq!(stale.len(), 3, "{stale:?}");
    assert!(
        stale.iter().all(|(m, _)| *m == KubeProxyMode::Ipvs),
        "{stale:?}"
    );
    assert!(
        stale[0]
            .1
            .starts_with("kube-ipvs0 (dummy) with 3 addresses"),
        "{stale:?}"
    );
    assert!(
        stale[1].1.starts_with("6 IPVS virtual servers"),
        "{stale:?}"
    );
    assert!(
        stale[2]
            .1
            .starts_with("17 KUBE-* ipsets, KUBE-CLUSTER-IP with 6 entries"),
        "{stale:?}"
    );
    // Counts stay reported for both modes.
    assert_eq!(f.services.iptables[0].rules.service_ports, 6);
    assert_eq!(f.services.ipvs.as_ref().unwrap().virtual_servers, Some(6));
}

#[test]
fn nftables_mode_with_stale_legacy_iptables_chains() {
    let f = fixture("nftables-legacy-leftovers");
    assert_eq!(f.proxy_mode.mode, Some(KubeProxyMode::Nftables));
    assert_eq!(f.proxy_mode.confidence, Confidence::Medium);
    let b = &f.iptables_backend;
    assert_eq!(
        (b.kube_proxy_chains_in, b.kubelet_hint_in),
        (Backends::Legacy, Backends::Both)
    );
    assert_eq!((b.wrapper_choice, b.active), (IptablesFlavour::Nft, None));
    let [l] = f.leftovers.as_slice() else {
        panic!("{:?}", f.leftovers)
    };
    assert_eq!(l.mode, KubeProxyMode::Iptables);
    assert!(
        l.what.contains("in iptables-legacy") && l.what.contains("6 KUBE-SVC/SVL and 12 KUBE-SEP"),
        "{}",
        l.what
    );
}

#[test]
fn iptables_chains_in_both_backends_follow_the_wrappers_choice() {
    let mut state = NodeState::load_dir(&fixtures_dir().join("iptables-nft")).unwrap();
    let legacy = NodeState::load_dir(&fixtures_dir().join("iptables-legacy")).unwrap();
    state.ip_tables_names = legacy.ip_tables_names;
    state.iptables_legacy_save = legacy.iptables_legacy_save;
    let f = analyse(&state);
    let b = &f.iptables_backend;
    assert_eq!(
        (b.kube_proxy_chains_in, b.kubelet_hint_in),
        (Backends::Both, Backends::Both)
    );
    // kubelet's hint in iptables-nft's mangle table decides, as in iptables-wrapper.
    assert_eq!(
        (b.wrapper_choice, b.active),
        (IptablesFlavour::Nft, Some(IptablesFlavour::Nft))
    );
    assert_eq!(f.proxy_mode.mode, Some(KubeProxyMode::Iptables));
    let [l] = f.leftovers.as_slice() else {
        panic!("{:?}", f.leftovers)
    };
    assert_eq!(l.mode, KubeProxyMode::Iptables);
    assert!(
        l.what.contains("in iptables-legacy")
            && l.what.ends_with("(kube-proxy's rules are in iptables-nft)"),
        "{}",
        l.what
    );
    assert_eq!(f.services.iptables.len(), 2);
}

#[test]
fn a_plain_node_has_no_kube_proxy() {
    let f = fixture("plain");
    assert_eq!(f.proxy_mode.mode, None);
    assert_eq!(f.proxy_mode.confidence, Confidence::High);
    assert!(f.proxy_mode.evidence.is_empty());
    assert_eq!(f.iptables_backend.kube_proxy_chains_in, Backends::None);
    assert_eq!(f.iptables_backend.wrapper_choice, IptablesFlavour::Nft);
    assert_eq!(f.services, Default::default());
    assert!(f.leftovers.is_empty() && f.notes.is_empty(), "{f:?}");
}

#[test]
fn the_metrics_endpoint_wins_and_a_disagreement_is_noted() {
    let dir = fixtures_dir().join("ipvs-to-iptables");
    let mut state = NodeState::load_dir(&dir).unwrap();
    state.proxy_mode = state::Input::Text("iptables\n".into());
    let f = analyse(&state);
    assert_eq!(
        (f.proxy_mode.mode, f.proxy_mode.source),
        (Some(KubeProxyMode::Iptables), ModeSource::MetricsEndpoint)
    );
    assert_eq!(f.proxy_mode.confidence, Confidence::High);
    assert!(f.notes.is_empty(), "{:?}", f.notes);
    // kube-proxy says ipvs: the iptables chains become the leftovers.
    state.proxy_mode = state::Input::Text("ipvs".into());
    let f = analyse(&state);
    assert_eq!(f.proxy_mode.mode, Some(KubeProxyMode::Ipvs));
    assert!(
        f.notes[0].contains("announces ipvs but the node's state looks like iptables"),
        "{:?}",
        f.notes
    );
    assert!(
        f.leftovers
            .iter()
            .all(|l| l.mode == KubeProxyMode::Iptables),
        "{:?}",
        f.leftovers
    );
}

#[test]
fn unknown_inputs_lower_confidence_and_are_noted() {
    let mut state = NodeState::load_dir(&fixtures_dir().join("plain")).unwrap();
    state.nft = state::Input::Unknown("nft not installed".into());
    let f = analyse(&state);
    assert_eq!(
        (f.proxy_mode.mode, f.proxy_mode.confidence),
        (None, Confidence::Low)
    );
    assert_eq!(f.notes, ["nftables state unknown: nft not installed"]);
}

// ---- Live collection ------------------------------------------------------

/// The cluster every fixture is built from.
fn fixture_cluster() -> Cluster {
    Cluster::new(ClusterSpec::new(3, 2)).unwrap()
}

/// kubelet's own chains (docs/kube-proxy-rules.md#iptables-skeleton-chains), which stay whatever
/// kube-proxy's mode.
const KUBELET_CHAINS: &str = "\
*mangle
:KUBE-IPTABLES-HINT - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
COMMIT
*filter
:KUBE-FIREWALL - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
-A INPUT -j KUBE-FIREWALL
-A OUTPUT -j KUBE-FIREWALL
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment \"block incoming localnet connections\" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
COMMIT
*nat
:KUBE-KUBELET-CANARY - [0:0]
COMMIT
";

/// `/proc/net/ip_vs` for the cluster in IPVS mode, in the kernel's format
/// (`ip_vs_info_seq_show`: host-order hex, `rr`, Masq, weight 1).
fn proc_ip_vs(cluster: &Cluster) -> String {
    let mut out = String::from(
        "IP Virtual Server version 1.2.1 (size=4096)\n\
         Prot LocalAddress:Port Scheduler Flags\n  \
         -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n",
    );
    for sp in cluster.service_ports() {
        let proto = sp.protocol.as_str().to_ascii_uppercase();
        let _ = writeln!(
            out,
            "{proto}  {:08X}:{:04X} rr  ",
            u32::from(sp.cluster_ip),
            sp.port
        );
        for ep in &sp.endpoints {
            let _ = writeln!(
                out,
                "  -> {:08X}:{:04X}      {:<7} {:<6} {:<10} {:<10}",
                u32::from(ep.ip),
                ep.port,
                "Masq",
                1,
                0,
                0
            );
        }
    }
    out
}

/// `ip -d -j addr show dev kube-ipvs0` for the cluster's VIPs, shaped as
/// iproute2 6.1 prints a DOWN dummy device.
fn kube_ipvs0_json(cluster: &Cluster) -> String {
    let addrs: Vec<String> = cluster
        .cluster_ips()
        .iter()
        .map(|ip| {
            format!(
                "{{\"family\":\"inet\",\"local\":\"{ip}\",\"prefixlen\":32,\"scope\":\"global\",\
                 \"label\":\"kube-ipvs0\",\"valid_life_time\":4294967295,\"preferred_life_time\":4294967295}}"
            )
        })
        .collect();
    format!(
        "[{{\"ifindex\":3,\"ifname\":\"kube-ipvs0\",\"flags\":[\"BROADCAST\",\"NOARP\"],\"mtu\":1500,\
         \"qdisc\":\"noop\",\"operstate\":\"DOWN\",\"group\":\"default\",\"txqlen\":1000,\
         \"link_type\":\"ether\",\"address\":\"6a:0c:1e:5b:33:90\",\"broadcast\":\"ff:ff:ff:ff:ff:ff\",\
         \"promiscuity\":0,\"allmulti\":0,\"min_mtu\":0,\"max_mtu\":0,\"linkinfo\":{{\"info_kind\":\"dummy\"}},\
         \"num_tx_queues\":1,\"num_rx_queues\":1,\"gso_max_size\":65536,\"gso_max_segs\":65535,\
         \"addr_info\":[{}]}}]\n",
        addrs.join(",")
    )
}

/// What to load into a namespace for one fixture state.
struct Recipe {
    name: &'static str,
    /// (program, args, stdin) run in order inside the namespace.
    loads: Vec<(&'static str, &'static [&'static str], String)>,
    /// IPVS objects, written from the formats (see the module header).
    ipvs_objects: bool,
}

fn recipes() -> Vec<Recipe> {
    let c = fixture_cluster();
    let iptables = restore_input(&c, &IptablesOptions::default());
    let nft = nft_input(&c, &["192.168.0.2".parse().unwrap()]);
    let ipsets = ipset_restore(&c);
    let ipvs_glue = ipvs_iptables_restore(c.spec().cluster_cidr, true);
    vec![
        Recipe {
            name: "plain",
            loads: vec![],
            ipvs_objects: false,
        },
        Recipe {
            name: "iptables-nft",
            loads: vec![("iptables-nft-restore", &[], iptables.clone())],
            ipvs_objects: false,
        },
        Recipe {
            name: "iptables-legacy",
            loads: vec![("iptables-legacy-restore", &[], iptables.clone())],
            ipvs_objects: false,
        },
        Recipe {
            name: "ipvs",
            loads: vec![
                ("ipset", &["restore"], ipsets.clone()),
                ("iptables-nft-restore", &[], KUBELET_CHAINS.to_owned()),
                ("iptables-nft-restore", &["--noflush"], ipvs_glue),
            ],
            ipvs_objects: true,
        },
        Recipe {
            name: "nftables",
            loads: vec![
                ("iptables-nft-restore", &[], KUBELET_CHAINS.to_owned()),
                ("nft", &["-f", "-"], nft.clone()),
            ],
            ipvs_objects: false,
        },
        Recipe {
            name: "ipvs-to-iptables",
            loads: vec![
                ("ipset", &["restore"], ipsets),
                ("iptables-nft-restore", &[], iptables.clone()),
            ],
            ipvs_objects: true,
        },
        Recipe {
            name: "nftables-legacy-leftovers",
            loads: vec![
                ("iptables-nft-restore", &[], KUBELET_CHAINS.to_owned()),
                ("nft", &["-f", "-"], nft),
                ("iptables-legacy-restore", &[], iptables),
            ],
            ipvs_objects: false,
        },
    ]
}

/// Loads a recipe into a fresh namespace and collects its state there.
fn collect_recipe(recipe: &Recipe) -> NodeState {
    let ns = NetNs::new(&format!("detect-{}", recipe.name)).unwrap();
    for (program, args, input) in &recipe.loads {
        ns.cmd_with_input(program, args, Some(input.clone()))
            .unwrap_or_else(|e| panic!("{}: {e:#}", recipe.name));
    }
    let subsystems = state::Subsystems {
        nf_tables: true,
        ip_set: true,
    };
    let mut state = ns
        .run(move || state::collect(&state::CollectOptions::default(), subsystems))
        .unwrap();
    if recipe.ipvs_objects {
        let c = fixture_cluster();
        state.ip_vs = state::Input::Text(proc_ip_vs(&c));
        state.kube_ipvs0 = state::Input::Text(kube_ipvs0_json(&c));
    }
    state
}

/// Drops what changes from run to run (iptables-save's date lines, ipset's
/// random initval) so a fresh capture compares with a stored one.
fn stable(state: &NodeState) -> String {
    let s = state.clone();
    let fields = [
        s.proxy_mode,
        s.ip_tables_names,
        s.ip6_tables_names,
        s.iptables_legacy_save,
        s.iptables_nft_save,
        s.nft,
        s.ip_vs,
        s.kube_ipvs0,
        s.ipset_names,
        s.ipset_cluster_ip,
    ];
    let varies = |l: &&str| {
        l.starts_with("# Generated by")
            || l.starts_with("# Completed on")
            || l.starts_with("Header:")
    };
    fields
        .iter()
        .map(|f| match f {
            state::Input::Text(t) => t
                .lines()
                .filter(|l| !varies(l))
                .collect::<Vec<_>>()
                .join("\n"),
            other => format!("{other:?}"),
        })
        .collect::<Vec<_>>()
        .join("\n--\n")
}

/// Fresh captures analyse exactly like the stored fixtures, so the parsers
/// keep up with the tools installed here.
#[test]
fn live_captures_analyse_like_the_fixtures() {
    if !is_root() {
        return skip(
            "live_captures_analyse_like_the_fixtures",
            "needs root to create network namespaces",
        );
    }
    for recipe in recipes() {
        let live = analyse(&collect_recipe(&recipe));
        let stored = fixture(recipe.name);
        assert_eq!(
            live, stored,
            "{}: live capture differs from the fixture",
            recipe.name
        );
    }
}

/// Rewrites `fixtures/` from fresh captures:
/// `PATHCOST_WRITE_FIXTURES=1 cargo test -p tracer regenerate_fixtures -- --ignored`.
#[test]
#[ignore = "rewrites the fixtures; needs root and PATHCOST_WRITE_FIXTURES=1"]
fn regenerate_fixtures() {
    if std::env::var_os("PATHCOST_WRITE_FIXTURES").is_none() || !is_root() {
        return skip(
            "regenerate_fixtures",
            "needs root and PATHCOST_WRITE_FIXTURES=1",
        );
    }
    for recipe in recipes() {
        let state = collect_recipe(&recipe);
        let dir = fixtures_dir().join(recipe.name);
        let old = NodeState::load_dir(&dir).ok();
        if old.as_ref().map(stable) != Some(stable(&state)) {
            state.save_dir(&dir).unwrap();
            eprintln!("wrote {}", dir.display());
        }
    }
}

// ---- This machine ---------------------------------------------------------

/// Everything `detect` could conceivably change, read with the node's tools.
fn root_snapshot() -> Vec<(String, String)> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_else(|e| format!("unreadable: {e}"));
    let run = |program: &str, args: &[&str]| match std::process::Command::new(program)
        .args(args)
        .output()
    {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.starts_with("# Generated by") && !l.starts_with("# Completed on"))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("{program}: {e}"),
    };
    vec![
        ("ip_tables_names".into(), read("/proc/net/ip_tables_names")),
        (
            "ip6_tables_names".into(),
            read("/proc/net/ip6_tables_names"),
        ),
        ("modules".into(), read("/proc/modules")),
        ("nft list ruleset".into(), run("nft", &["list", "ruleset"])),
        ("iptables-nft-save".into(), run("iptables-nft-save", &[])),
        ("ipset list -n".into(), run("ipset", &["list", "-n"])),
        ("ip link".into(), run("ip", &["-o", "link", "show"])),
        ("mounts".into(), read("/proc/self/mounts")),
    ]
}

#[test]
fn detect_on_this_machine_reads_only_and_matches_the_kernel() {
    if !is_root() {
        return skip(
            "detect_on_this_machine_reads_only_and_matches_the_kernel",
            "needs root to read the rules",
        );
    }
    let before = root_snapshot();
    let d = super::detect().unwrap();
    let after = root_snapshot();
    for ((what, b), (_, a)) in before.iter().zip(&after) {
        assert_eq!(b, a, "detect changed {what}");
    }
    eprintln!("{}", super::table::render(&d));

    // The kernel part agrees with what the files say.
    let exists = |p: &str| std::path::Path::new(p).exists();
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap();
    let has = |sym: &str| {
        kallsyms
            .lines()
            .any(|l| l.split_whitespace().nth(2) == Some(sym))
    };
    let k = &d.kernel;
    assert_eq!(
        k.btf.support == super::Support::Yes,
        exists("/sys/kernel/btf/vmlinux")
    );
    assert_eq!(
        k.kprobes.support == super::Support::Yes,
        exists("/sys/bus/event_source/devices/kprobe/type")
    );
    if has("__traceiter_netif_receive_skb") {
        assert_eq!(
            k.tracepoints.netif_receive_skb.exists.support,
            super::Support::Yes
        );
    }
    if has("__traceiter_fib_table_lookup") {
        assert_eq!(
            k.tracepoints.fib_table_lookup.exists.support,
            super::Support::Yes
        );
    }
    assert_eq!(
        k.ipvs_loaded.support == super::Support::Yes,
        exists("/proc/net/ip_vs")
    );
    assert_eq!(d.probe_sites.len(), crate::probes::SITES.len());
    let nf_hook_slow = &d.probe_sites[0];
    assert_eq!(nf_hook_slow.symbol.as_deref(), Some("nf_hook_slow"));
    assert_eq!(
        nf_hook_slow.layout_resolves,
        exists("/sys/kernel/btf/vmlinux")
    );

    // A root namespace without kube-proxy chains or tables reports none.
    let rules: String = before.iter().map(|(_, v)| v.as_str()).collect();
    if !rules.contains("KUBE-")
        && !rules.contains("kube-proxy")
        && !exists("/sys/class/net/kube-ipvs0")
    {
        assert_eq!(d.node.proxy_mode.mode, None, "{:?}", d.node.proxy_mode);
        assert!(d.node.leftovers.is_empty(), "{:?}", d.node.leftovers);
    }
    // The JSON form serialises.
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["schema_version"], super::DETECT_SCHEMA_VERSION);
    assert!(json["proxy_mode"]["source"].is_string());
}
