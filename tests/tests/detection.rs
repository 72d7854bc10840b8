//! Detection judged on stored node states (tracer/src/detection/fixtures/,
//! one directory per state), on states collected live from throwaway
//! network namespaces, and on the machine's own root namespace, which must
//! come out unchanged. On the host and in the test VM: IPVS and dummy
//! devices exist only in the VM, so the states with IPVS objects are
//! collected live (and captured) there.
//!
//! The fixtures are real tool output: `regenerate_fixtures` loads the
//! synthesis generators' rules for a 3-service × 2-endpoint cluster (TCP and
//! UDP ports: 6 service ports, 12 endpoints, 3 ClusterIPs) into private
//! namespaces and stores what `state::collect` reads there (the fixtures'
//! README says how to run it, on the host and in the VM).

use std::path::{Path, PathBuf};

use pathcost_tests::{in_vm, is_root, skip, workspace};
use tracer::{
    detection::{
        self, analyse, state, Backends, Confidence, IptablesFlavour, KubeProxyMode, ModeSource, NodeFindings,
        NodeState, Support,
    },
    netns::NetNs,
    synthesis::{
        cluster::{Cluster, ClusterSpec},
        iptables::{restore_input, IptablesOptions},
        ipvs::{ip_batch, ipset_restore, ipvsadm_restore, iptables_restore as ipvs_iptables_restore, Scheduler},
        nftables::nft_input,
        program::Mode,
    },
};

fn fixtures_dir() -> PathBuf {
    workspace().join("tracer/src/detection/fixtures")
}

fn fixture(name: &str) -> NodeFindings {
    let state = NodeState::load_dir(&fixtures_dir().join(name)).unwrap();
    analyse(&state)
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

/// What to load into a namespace for one fixture state.
struct Recipe {
    name: &'static str,
    /// (program, args, stdin) run in order inside the namespace.
    loads: Vec<(&'static str, &'static [&'static str], String)>,
    /// Whether it holds IPVS objects (virtual servers, `kube-ipvs0`), which
    /// only a kernel with IPVS and dummy devices can load: the test VM's.
    ipvs: bool,
}

fn recipes() -> Vec<Recipe> {
    let c = fixture_cluster();
    let iptables = restore_input(&c, &IptablesOptions::default());
    let nft = nft_input(&c, &["192.168.0.2".parse().unwrap()]);
    let ipsets = ipset_restore(&c);
    let ipvs_glue = ipvs_iptables_restore(c.spec().cluster_cidr, true);
    // kube-ipvs0 with the VIPs, and the virtual servers (rr, masquerading,
    // weight 1), as `pathcost sweep` programs IPVS mode.
    let kube_ipvs0 = ("ip", &["-batch", "-"][..], ip_batch(&c));
    let virtual_servers = ("ipvsadm", &["-R"][..], ipvsadm_restore(&c, Scheduler::Rr));
    vec![
        Recipe { name: "plain", loads: vec![], ipvs: false },
        Recipe { name: "iptables-nft", loads: vec![("iptables-nft-restore", &[], iptables.clone())], ipvs: false },
        Recipe {
            name: "iptables-legacy",
            loads: vec![("iptables-legacy-restore", &[], iptables.clone())],
            ipvs: false,
        },
        Recipe {
            name: "ipvs",
            loads: vec![
                kube_ipvs0.clone(),
                ("ipset", &["restore"], ipsets.clone()),
                ("iptables-nft-restore", &[], KUBELET_CHAINS.to_owned()),
                ("iptables-nft-restore", &["--noflush"], ipvs_glue),
                virtual_servers.clone(),
            ],
            ipvs: true,
        },
        Recipe {
            name: "nftables",
            loads: vec![
                ("iptables-nft-restore", &[], KUBELET_CHAINS.to_owned()),
                ("nft", &["-f", "-"], nft.clone()),
            ],
            ipvs: false,
        },
        Recipe {
            name: "ipvs-to-iptables",
            loads: vec![
                kube_ipvs0,
                ("ipset", &["restore"], ipsets),
                ("iptables-nft-restore", &[], iptables.clone()),
                virtual_servers,
            ],
            ipvs: true,
        },
        Recipe {
            name: "nftables-legacy-leftovers",
            loads: vec![
                ("iptables-nft-restore", &[], KUBELET_CHAINS.to_owned()),
                ("nft", &["-f", "-"], nft),
                ("iptables-legacy-restore", &[], iptables),
            ],
            ipvs: false,
        },
    ]
}

/// Why this kernel cannot load the recipes with IPVS objects, or `None`.
fn ipvs_unavailable() -> Option<String> {
    if let Some(why) = Mode::Ipvs.unavailable_reason(Scheduler::Rr) {
        return Some(why);
    }
    // kube-ipvs0 is a dummy device.
    let dummy = Path::new("/sys/module/dummy").exists();
    (!dummy).then(|| "the dummy device driver is not in this kernel (no /sys/module/dummy)".to_owned())
}

/// Loads a recipe into a fresh namespace and collects its state there.
fn collect_recipe(recipe: &Recipe) -> NodeState {
    let ns = NetNs::new(&format!("detect-{}", recipe.name)).unwrap();
    for (program, args, input) in &recipe.loads {
        ns.cmd_with_input(program, args, Some(input.clone())).unwrap_or_else(|e| panic!("{}: {e:#}", recipe.name));
    }
    let subsystems = state::Subsystems { nf_tables: true, ip_set: true };
    ns.run(move || state::collect(&state::CollectOptions::default(), subsystems)).unwrap()
}

/// Drops what changes from run to run, so a fresh capture compares with a
/// stored one: iptables-save's date lines, ipset's random initval,
/// kube-ipvs0's random MAC address, and the order of /proc/net/ip_vs's
/// virtual servers (a hash table's, seeded per namespace).
fn stable(state: &NodeState) -> String {
    let s = state.clone();
    let text = |input: state::Input, normalise: fn(&str) -> String| match input {
        state::Input::Text(t) => normalise(&t),
        other => format!("{other:?}"),
    };
    let lines = without_dates_and_seeds;
    [
        text(s.proxy_mode, lines),
        text(s.ip_tables_names, lines),
        text(s.ip6_tables_names, lines),
        text(s.iptables_legacy_save, lines),
        text(s.iptables_nft_save, lines),
        text(s.nft, lines),
        text(s.ip_vs, sorted_virtual_servers),
        text(s.kube_ipvs0, without_mac_address),
        text(s.ipset_names, lines),
        text(s.ipset_cluster_ip, lines),
    ]
    .join("\n--\n")
}

/// Without iptables-save's date lines and ipset's `Header:` (its random
/// initval).
fn without_dates_and_seeds(text: &str) -> String {
    let varies = |l: &&str| l.starts_with("# Generated by") || l.starts_with("# Completed on") || l.starts_with("Header:");
    text.lines().filter(|l| !varies(l)).collect::<Vec<_>>().join("\n")
}

/// /proc/net/ip_vs with its virtual servers (each with its real servers)
/// in sorted order, after the three header lines.
fn sorted_virtual_servers(text: &str) -> String {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.by_ref().take(3).collect();
    let mut servers: Vec<String> = Vec::new();
    for line in lines {
        match servers.last_mut() {
            Some(server) if line.starts_with("  ->") => {
                server.push('\n');
                server.push_str(line);
            }
            _ => servers.push(line.to_owned()),
        }
    }
    servers.sort();
    header.into_iter().map(str::to_owned).chain(servers).collect::<Vec<_>>().join("\n")
}

/// `ip -j` output without the link's `address` (a dummy device gets a
/// random MAC).
fn without_mac_address(json: &str) -> String {
    let mut value: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    for link in value.as_array_mut().into_iter().flatten() {
        if let Some(link) = link.as_object_mut() {
            link.remove("address");
        }
    }
    value.to_string()
}

/// Fresh captures of the states without IPVS analyse exactly like the
/// stored fixtures, so the parsers keep up with the tools installed here.
#[test]
fn live_captures_analyse_like_the_fixtures() {
    const TEST: &str = "live_captures_analyse_like_the_fixtures";
    if !is_root() {
        return skip(TEST, "needs root to create network namespaces");
    }
    for recipe in recipes().iter().filter(|r| !r.ipvs) {
        let live = analyse(&collect_recipe(recipe));
        assert_eq!(live, fixture(recipe.name), "{}: live capture differs from the fixture", recipe.name);
    }
}

/// The same for the states with IPVS objects: virtual servers loaded with
/// ipvsadm and a real `kube-ipvs0` (in the test VM, on each kernel).
#[test]
fn live_ipvs_captures_analyse_like_the_fixtures() {
    const TEST: &str = "live_ipvs_captures_analyse_like_the_fixtures";
    if !is_root() {
        return skip(TEST, "needs root to create network namespaces");
    }
    if let Some(why) = ipvs_unavailable() {
        return skip(TEST, &format!("{why} (runs in the test VM: cargo xtask test)"));
    }
    for recipe in recipes().iter().filter(|r| r.ipvs) {
        let state = collect_recipe(recipe);
        assert!(state.ip_vs.text().is_some_and(|t| t.contains("Masq")), "{}: {:?}", recipe.name, state.ip_vs);
        let live = analyse(&state);
        assert_eq!(live, fixture(recipe.name), "{}: live capture differs from the fixture", recipe.name);
    }
}

/// Names the fixtures to rewrite: `all`, or a comma-separated list.
const WRITE_ENV: &str = "PATHCOST_WRITE_FIXTURES";
/// Where to write them instead of the fixtures directory (to compare a
/// capture from another kernel without replacing the stored one).
const WRITE_DIR_ENV: &str = "PATHCOST_FIXTURES_OUT";

/// Rewrites fixtures from fresh captures: run by hand, as root, on the
/// host for the states without IPVS and in the test VM for the others
/// (tracer/src/detection/fixtures/README.md gives both commands). A
/// fixture whose capture differs only in what varies between runs
/// ([`stable`]) is left alone.
#[test]
#[ignore = "rewrites the fixtures; needs root and PATHCOST_WRITE_FIXTURES"]
fn regenerate_fixtures() {
    const TEST: &str = "regenerate_fixtures";
    let Some(wanted) = std::env::var(WRITE_ENV).ok() else {
        return skip(TEST, &format!("needs {WRITE_ENV}=all or a list of fixture names"));
    };
    if !is_root() {
        return skip(TEST, "needs root to create network namespaces");
    }
    let out = std::env::var_os(WRITE_DIR_ENV).map_or_else(fixtures_dir, PathBuf::from);
    let wanted: Vec<&str> = wanted.split(',').map(str::trim).collect();
    let chosen: Vec<Recipe> =
        recipes().into_iter().filter(|r| wanted.contains(&"all") || wanted.contains(&r.name)).collect();
    assert!(!chosen.is_empty(), "{WRITE_ENV}={} names no fixture", wanted.join(","));
    let ipvs_unavailable = ipvs_unavailable();
    for recipe in chosen {
        if let (true, Some(why)) = (recipe.ipvs, &ipvs_unavailable) {
            assert!(!in_vm(), "{why}");
            eprintln!("not capturing {} here: {why} (capture it in the test VM)", recipe.name);
            continue;
        }
        let state = collect_recipe(&recipe);
        let dir = out.join(recipe.name);
        let old = NodeState::load_dir(&dir).ok();
        if old.as_ref().map(stable) != Some(stable(&state)) {
            state.save_dir(&dir).unwrap();
            eprintln!("wrote {}", dir.display());
        } else {
            eprintln!("unchanged {}", dir.display());
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
    let d = detection::detect().unwrap();
    let after = root_snapshot();
    for ((what, b), (_, a)) in before.iter().zip(&after) {
        assert_eq!(b, a, "detect changed {what}");
    }
    eprintln!("{}", detection::table::render(&d));

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
        k.btf.support == Support::Yes,
        exists("/sys/kernel/btf/vmlinux")
    );
    assert_eq!(
        k.kprobes.support == Support::Yes,
        exists("/sys/bus/event_source/devices/kprobe/type")
    );
    if has("__traceiter_netif_receive_skb") {
        assert_eq!(
            k.tracepoints.netif_receive_skb.exists.support,
            Support::Yes
        );
    }
    if has("__traceiter_fib_table_lookup") {
        assert_eq!(
            k.tracepoints.fib_table_lookup.exists.support,
            Support::Yes
        );
    }
    assert_eq!(
        k.ipvs_loaded.support == Support::Yes,
        exists("/proc/net/ip_vs")
    );
    assert_eq!(d.probe_sites.len(), tracer::probes::SITES.len());
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
    assert_eq!(json["schema_version"], detection::DETECT_SCHEMA_VERSION);
    assert!(json["proxy_mode"]["source"].is_string());
}
