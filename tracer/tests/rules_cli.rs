//! `pathcost rules` as a user runs it: for every mode the printed inputs
//! have kube-proxy's structures, the same seed prints the same bytes, and
//! the JSON carries exactly what the sweep would feed to the tools for that
//! point. Needs no privileges; tests/tests/rules_tools.rs feeds the output
//! to the real tools.

use std::process::{Command, Output};

use serde_json::Value;
use tracer::{
    synthesis::{cluster::Protocol, ipvs::Scheduler, program::{steps, Mode}},
    sweep::point_cluster,
};

fn pathcost(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pathcost"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("pathcost runs")
}

/// `pathcost rules ARGS` stdout; the command must succeed.
fn rules(args: &[&str]) -> String {
    let out = pathcost(&[&["rules"], args].concat());
    assert!(out.status.success(), "rules {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The `# COMMAND` headers in the text output, in order.
fn headers(text: &str) -> Vec<String> {
    // A header is the comment right after a blank line; the inputs' own
    // comments never follow one.
    text.split("\n\n").skip(1).map(|section| section.lines().next().unwrap().to_owned()).collect()
}

#[test]
fn iptables_modes_print_one_restore_with_every_service_chain() {
    for (mode, tool) in [("iptables-legacy", "iptables-legacy-restore"), ("iptables-nft", "iptables-nft-restore")] {
        let text = rules(&["--mode", mode, "--services", "3", "--protocols", "tcp"]);
        assert_eq!(headers(&text), [format!("# {tool}")], "{text}");
        let nat = &text[text.find("*nat\n").expect("a nat table")..];
        assert!(nat.contains("\n:KUBE-SERVICES - [0:0]\n"), "{text}");
        assert_eq!(text.matches("\n:KUBE-SVC-").count(), 3, "{text}");
        assert_eq!(text.matches("\n:KUBE-SEP-").count(), 3 * 2, "{text}");
        assert_eq!(text.matches("-A KUBE-SERVICES -d 172.30.").count(), 3, "{text}");
        // The NodePort jump stays last in KUBE-SERVICES, as kube-proxy writes it.
        let last = text.lines().rfind(|l| l.starts_with("-A KUBE-SERVICES")).unwrap();
        assert!(last.contains("-j KUBE-NODEPORTS"), "{last}");
        assert_eq!(text.matches("COMMIT\n").count(), 3, "mangle, filter, nat: {text}");
    }
}

#[test]
fn ipvs_prints_the_four_inputs_and_the_sysctl_in_kube_proxys_order() {
    let text = rules(&["--mode", "ipvs", "--services", "3", "--ipvs-scheduler", "wrr"]);
    assert_eq!(
        headers(&text),
        [
            "# ip -batch -",
            "# ipset restore",
            "# iptables-legacy-restore --noflush",
            "# ipvsadm -R",
            "# sysctl -w net.ipv4.vs.conntrack=1"
        ],
        "{text}"
    );
    // udp and tcp for each of 3 services: 6 virtual services, 2 real servers each.
    assert_eq!(text.lines().filter(|l| l.starts_with("-A -")).count(), 6, "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("-a -")).count(), 12, "{text}");
    assert!(text.lines().filter(|l| l.starts_with("-A -")).all(|l| l.ends_with("-s wrr")), "{text}");
    assert_eq!(text.matches("addr add 172.30.0.").count(), 3, "{text}");
    assert_eq!(text.matches("add KUBE-CLUSTER-IP 172.30.0.").count(), 6, "{text}");
    // The iptables glue matches the ipset, not per-service rules.
    assert!(text.contains("-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT"), "{text}");
}

#[test]
fn nftables_prints_one_nft_file_with_the_service_map() {
    let text = rules(&["--mode", "nftables", "--services", "3"]);
    assert_eq!(headers(&text), ["# nft -f -"], "{text}");
    assert!(text.contains("add table ip kube-proxy"), "{text}");
    assert!(text.contains("add map ip kube-proxy service-ips"), "{text}");
    assert_eq!(text.matches("add element ip kube-proxy service-ips").count(), 6, "{text}");
    // Per-service and per-endpoint chains carry the service's name
    // (`service-HASH-ns1/svc1/udp/p80`); the fixed chains do not.
    let chains = |prefix: &str| {
        text.lines().filter(|l| l.starts_with(&format!("add chain ip kube-proxy {prefix}")) && l.contains('/')).count()
    };
    assert_eq!(chains("service-"), 6, "{text}");
    assert_eq!(chains("endpoint-"), 12, "{text}");
}

#[test]
fn the_same_seed_prints_the_same_bytes_and_another_seed_reorders() {
    for mode in Mode::ALL.map(Mode::as_str) {
        let args = ["--mode", mode, "--services", "20", "--seed", "7"];
        assert_eq!(rules(&args), rules(&args), "{mode}");
    }
    // Only KUBE-SERVICES' order depends on the seed.
    let a = rules(&["--mode", "iptables-legacy", "--services", "20", "--seed", "7"]);
    let b = rules(&["--mode", "iptables-legacy", "--services", "20", "--seed", "8"]);
    assert_ne!(a, b);
    let sorted = |t: &str| {
        let mut lines: Vec<&str> = t.lines().filter(|l| !l.starts_with("# pathcost rules")).collect();
        lines.sort_unstable();
        lines.join("\n")
    };
    assert_eq!(sorted(&a), sorted(&b), "a new seed must only reorder rules");
}

/// The key property: what `rules` prints is what the sweep programs for
/// the point, built by the same functions from the same cluster (the
/// sweep's default seed is 1, declared once for both commands).
#[test]
fn json_holds_exactly_the_steps_the_sweep_applies() {
    for mode in Mode::ALL {
        let out = rules(&["--mode", mode.as_str(), "--services", "5", "--endpoints", "3", "--format", "json"]);
        let printed: Vec<Value> = serde_json::from_str(&out).expect("a JSON array");
        let cluster = point_cluster(5, 3, &[Protocol::Udp, Protocol::Tcp], 1).unwrap();
        let expected = steps(mode, &cluster, Scheduler::Rr);
        assert_eq!(printed.len(), expected.len(), "{mode}");
        for (p, e) in printed.iter().zip(&expected) {
            let (tool, args) = e.command();
            assert_eq!(p["tool"], tool, "{mode}");
            assert_eq!(p["args"], serde_json::json!(args), "{mode}");
            assert_eq!(p["input"], e.input(), "{mode} {tool}");
        }
        // The text format carries the same inputs under the same headers.
        let text = rules(&["--mode", mode.as_str(), "--services", "5", "--endpoints", "3"]);
        for e in &expected {
            assert!(text.contains(&format!("\n# {}\n{}", e.command_line(), e.input())), "{mode}: {}", e.command_line());
        }
    }
}

#[test]
fn bad_values_are_usage_errors() {
    for args in [
        &["rules", "--mode", "iptables", "--services", "3"][..],
        &["rules", "--mode", "nftables", "--services", "0"],
        &["rules", "--mode", "nftables"],
        &["rules", "--mode", "ipvs", "--services", "3", "--ipvs-scheduler", "fastest"],
        &["rules", "--mode", "nftables", "--services", "3", "--protocols", "sctp"],
    ] {
        let out = pathcost(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
