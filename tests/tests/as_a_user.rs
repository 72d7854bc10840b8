//! pathcost run end to end as a user would, checking what lands in the
//! files others read:
//! - `detect --format json`: the top-level shape the README documents and
//!   the fields .github/workflows/kind.yml reads with jq, with the values
//!   they must have for a node running kube-proxy's iptables mode;
//! - `trace --format json --output FILE` while new connections flow: the
//!   file parses, has the documented keys, and rows with the fields the
//!   kind workflow prints;
//! - `sweep` then `report` and `advise` on the results.json it wrote
//!   (host only: a sweep takes minutes under the VM's emulation).

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddrV4,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use pathcost_tests::{is_root, pathcost_bin, serve::pathcost_in_node_ns, skip};
use serde_json::Value;
use tracer::synthesis::{
    cluster::{Cluster, ClusterSpec, Protocol},
    ipvs::Scheduler,
    program::{program, Mode},
    topology::Topology,
    traffic::{self, Pace},
};

/// `detect --format json`'s top-level keys (README, "detect --format json").
const DETECT_KEYS: [&str; 10] = [
    "schema_version",
    "proxy_mode",
    "iptables_backend",
    "services",
    "count_sources",
    "leftovers",
    "unreadable",
    "notes",
    "kernel",
    "probe_sites",
];
/// `trace --format json`'s top-level keys (README, "trace --format json").
const TRACE_KEYS: [&str; 12] = [
    "schema_version",
    "kernel",
    "duration_s",
    "sites",
    "rows",
    "per_packet",
    "per_packet_corrected",
    "in_kernel",
    "losses",
    "self_cost",
    "program_run",
    "collection",
];

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pathcost-user-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

fn sorted<const N: usize>(mut k: [&'static str; N]) -> Vec<&'static str> {
    k.sort_unstable();
    k.to_vec()
}

/// The shape every detection has, whatever the node runs.
fn check_detect_shape(d: &Value) {
    assert_eq!(keys(d), sorted(DETECT_KEYS), "detect's top-level keys changed: update the README and kind.yml");
    assert_eq!(d["schema_version"], 1, "{d}");
    let mode = &d["proxy_mode"];
    assert!(mode["mode"].is_string() || mode["mode"].is_null(), "{mode}");
    for k in ["source", "confidence", "endpoint"] {
        assert!(mode[k].is_string(), "proxy_mode.{k}: {mode}");
    }
    assert!(d["iptables_backend"]["wrapper_choice"].is_string(), "{d}");
    let services = &d["services"];
    assert!(services["iptables"].is_array() && services["nftables"].is_array(), "{services}");
    assert!(services["ipvs"].is_object() || services["ipvs"].is_null(), "{services}");
    assert!(d["leftovers"].is_array() && d["notes"].is_array() && d["unreadable"].is_array(), "{d}");
    for c in d["count_sources"].as_array().unwrap() {
        assert_eq!(
            keys(c),
            ["answered_by", "counted_in", "disagree", "netlink", "tool", "value", "what"],
            "count_sources changed: update the README: {c}"
        );
        assert!(c["answered_by"].is_null() || c["answered_by"] == "netlink" || c["answered_by"] == "tool", "{c}");
    }
    assert!(d["kernel"]["release"].is_string(), "{d}");
    let sites = d["probe_sites"].as_array().unwrap();
    assert!(!sites.is_empty(), "{d}");
    for s in sites {
        assert!(s["site"].is_string() && s.get("mechanism_expected").is_some(), "{s}");
    }
}

/// Any user, any node (no root needed): the shape only.
#[test]
fn detect_json_keeps_its_documented_shape() {
    let out = Command::new(pathcost_bin())
        .args(["detect", "--format", "json", "--metrics-address", "none"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    check_detect_shape(&serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}")));
}

/// In a node namespace running kube-proxy-shaped iptables-legacy rules:
/// what kind.yml's jq expressions find there.
#[test]
fn detect_json_gives_kind_workflow_its_mode_and_service_count() {
    const TEST: &str = "detect_json_gives_kind_workflow_its_mode_and_service_count";
    if !is_root() {
        return skip(TEST, "needs root to build the node namespace");
    }
    if let Some(why) = Mode::IptablesLegacy.unavailable_reason(Scheduler::default()) {
        return skip(TEST, &why);
    }
    let cluster = Cluster::new(ClusterSpec::new(7, 2).with_protocols(vec![Protocol::Udp])).unwrap();
    let topo = Topology::build().unwrap();
    program(Mode::IptablesLegacy, &cluster, Scheduler::default(), &topo.node).unwrap();
    let dir = scratch("detect");
    let file = dir.join("detect.json");
    let out = pathcost_in_node_ns(&topo)
        .args(["detect", "--format", "json", "--metrics-address", "none", "--output", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let d: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    check_detect_shape(&d);
    // jq -r '.proxy_mode.mode'
    assert_eq!(d["proxy_mode"]["mode"], "iptables", "{d}");
    // jq '[(.services.iptables[]?.service_ports), ...] | max'
    let ports: Vec<u64> =
        d["services"]["iptables"].as_array().unwrap().iter().map(|s| s["service_ports"].as_u64().unwrap()).collect();
    assert_eq!(ports.iter().max().copied(), Some(cluster.service_ports().len() as u64), "{d}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `trace` in the node namespace while new connections cross it: auto
/// backend, as a user runs it (function probes in the VM, the bracket on a
/// host without kprobes).
#[test]
fn trace_json_output_file_has_the_documented_shape_and_rows() {
    const TEST: &str = "trace_json_output_file_has_the_documented_shape_and_rows";
    if !is_root() {
        return skip(TEST, "needs root");
    }
    if let Some(why) = Mode::IptablesLegacy.unavailable_reason(Scheduler::default()) {
        return skip(TEST, &why);
    }
    let cluster = Cluster::new(ClusterSpec::new(5, 2).with_protocols(vec![Protocol::Udp])).unwrap();
    let topo = Topology::build().unwrap();
    program(Mode::IptablesLegacy, &cluster, Scheduler::default(), &topo.node).unwrap();
    let _backend = traffic::Backend::start(&topo, 80).unwrap();
    let dir = scratch("trace");
    let file = dir.join("sub/trace.json");
    let mut child = pathcost_in_node_ns(&topo)
        .args(["trace", "--duration", "6s", "--interval", "0", "--no-calibrate", "--netns", "/proc/self/ns/net"])
        .args(["--format", "json", "--output", file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    // The "site -> mechanism" lines come once every probe is attached.
    for line in stderr.by_ref() {
        let line = line.unwrap();
        seen += &line;
        seen.push('\n');
        if line.contains(" -> ") {
            break;
        }
    }
    assert!(seen.contains(" -> "), "trace never attached: {seen}");
    let ports = cluster.service_ports();
    let targets =
        (0..100).map(|i| (Protocol::Udp, SocketAddrV4::new(ports[i % ports.len()].cluster_ip, ports[i % ports.len()].port)));
    traffic::new_connections(&topo, targets.collect(), Pace { rate: 0, max_time: Duration::from_secs(3) }).unwrap();
    let rest: Vec<String> = stderr.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {seen}{}", rest.join("\n"));

    let t: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(keys(&t), sorted(TRACE_KEYS), "trace's top-level keys changed: update the README and kind.yml");
    assert!(t["duration_s"].as_f64().unwrap() > 0.0, "{t}");
    assert!(t["losses"].is_object() && t["self_cost"].is_array() && t["in_kernel"].is_array(), "{t}");
    for s in t["sites"].as_array().unwrap() {
        assert!(s["site"].is_string() && s.get("mechanism").is_some(), "{s}");
    }
    let rows = t["rows"].as_array().unwrap();
    assert!(!rows.is_empty(), "no rows after 100 new connections: {t}");
    // jq -r '.rows[] | [.site, .hook, .table, .chain, .count, .p50_ns, .p99_ns] | @tsv'
    for r in rows {
        for k in ["site", "hook", "table", "chain"] {
            assert!(r[k].is_string() || r[k].is_null(), "row {k}: {r}");
        }
        for k in ["count", "p50_ns", "p99_ns"] {
            assert!(r[k].is_number(), "row {k}: {r}");
        }
    }
    let counted: u64 = rows.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    assert!(counted >= 100, "{counted} calls for 100 new connections: {t}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A sweep takes minutes under the VM's emulation; the host runs it with
/// the bracket in seconds.
mod host_only {
    use super::*;

    #[test]
    fn sweep_then_report_and_advise_on_the_results_it_wrote() {
        const TEST: &str = "sweep_then_report_and_advise_on_the_results_it_wrote";
        if !is_root() {
            return skip(TEST, "needs root");
        }
        if let Some(why) = tracer::capabilities::bracket_unavailable_reason()
            .or_else(|| Mode::IptablesLegacy.unavailable_reason(Scheduler::default()))
            .or_else(|| Mode::Nftables.unavailable_reason(Scheduler::default()))
        {
            return skip(TEST, &why);
        }
        let dir = scratch("sweep");
        let run = |args: &[&str]| {
            let out = Command::new(pathcost_bin()).args(args).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(out.status.success(), "{args:?}: {stderr}");
            (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
        };
        let out_dir = dir.join("out");
        run(&[
            "sweep", "--backend", "bracket", "--modes", "iptables-legacy,nftables", "--services", "10,100",
            "--connections", "100", "--output", out_dir.to_str().unwrap(),
        ]);
        let results = out_dir.join("results.json");
        let r: Value = serde_json::from_str(&std::fs::read_to_string(&results).unwrap()).unwrap();
        assert_eq!(r["interrupted"], false, "{r}");
        let points = r["points"].as_array().unwrap();
        let mut found: Vec<(String, u64)> =
            points.iter().map(|p| (p["mode"].as_str().unwrap().to_owned(), p["services"].as_u64().unwrap())).collect();
        found.sort();
        let want: Vec<(String, u64)> = [("iptables-legacy", 10), ("iptables-legacy", 100), ("nftables", 10), ("nftables", 100)]
            .map(|(m, n)| (m.to_owned(), n))
            .to_vec();
        assert_eq!(found, want, "{r}");
        for p in points {
            assert!(p["transit_new_connection"]["count"].as_u64().unwrap() > 0, "{p}");
        }

        let results = results.to_str().unwrap();
        let report_json = dir.join("report.json");
        let svg = dir.join("cost.svg");
        run(&["report", results, "--format", "json", "--output", report_json.to_str().unwrap(), "--export", &format!("svg={}", svg.display())]);
        let report: Value = serde_json::from_str(&std::fs::read_to_string(&report_json).unwrap()).unwrap();
        assert_eq!(keys(&report), ["analysis", "report_schema_version", "results"], "{report}");
        assert_eq!(report["results"]["points"].as_array().unwrap().len(), 4, "{report}");
        let fitted: Vec<&str> =
            report["analysis"]["modes"].as_array().unwrap().iter().map(|m| m["mode"].as_str().unwrap()).collect();
        assert_eq!(fitted, ["iptables-legacy", "nftables"], "{report}");
        assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"), "svg export");
        let (table, _) = run(&["report", results]);
        assert!(table.contains("iptables-legacy") && table.contains("nftables"), "{table}");

        let (advice, _) = run(&["advise", results, "--mode", "iptables-legacy", "--services", "100"]);
        assert!(advice.contains("nftables") && advice.contains("iptables-legacy"), "{advice}");
        assert!(advice.contains("the node runs iptables-legacy"), "{advice}");
        assert!(advice.contains("recommended: "), "advise recommended nothing: {advice}");
        assert!(advice.contains("kind: KubeProxyConfiguration"), "advise gave no configuration: {advice}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
