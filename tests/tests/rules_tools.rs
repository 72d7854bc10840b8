//! `pathcost rules` against the real tools: for every mode this kernel can
//! run, each printed input is fed, in the printed order, to the printed
//! command inside a private network namespace (unshared on a thread, gone
//! with the process), and the tools then list the services that were
//! printed. The root namespace is compared before and after.

use std::process::Command;

use pathcost_tests::{is_root, pathcost_bin, root_network_state, skip};
use serde_json::Value;
use tracer::{
    netns::NetNs,
    synthesis::{ipvs::Scheduler, program::Mode},
};

const SERVICES: &str = "3";
/// udp and tcp for each service.
const SERVICE_PORTS: usize = 6;

/// Runs every printed step in `ns`, as a user replaying the output would.
fn replay(mode: Mode, ns: &NetNs) {
    let out = Command::new(pathcost_bin())
        .args(["rules", "--mode", mode.as_str(), "--services", SERVICES, "--format", "json"])
        .output()
        .expect("run pathcost rules");
    assert!(out.status.success(), "{mode}: {}", String::from_utf8_lossy(&out.stderr));
    let steps: Vec<Value> = serde_json::from_slice(&out.stdout).expect("a JSON array");
    assert!(!steps.is_empty(), "{mode}: nothing printed");
    for step in steps {
        let tool = step["tool"].as_str().unwrap();
        let args: Vec<&str> = step["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        let input = step["input"].as_str().unwrap().to_owned();
        if tool == "sysctl" {
            // Set through /proc as the sweep does: the VM has no sysctl binary.
            let (key, value) = args[1].split_once('=').unwrap();
            ns.sysctl(key, value).unwrap_or_else(|e| panic!("{mode}: {e:#}"));
        } else {
            ns.cmd_with_input(tool, &args, Some(input)).unwrap_or_else(|e| panic!("{mode}: {tool} {args:?}: {e:#}"));
        }
    }
}

/// How many service ports the tools list in `ns` after `mode` was loaded.
fn listed_service_ports(mode: Mode, ns: &NetNs) -> usize {
    let count = |tool: &str, args: &[&str], needle: &str| ns.cmd(tool, args).unwrap().matches(needle).count();
    match mode {
        Mode::IptablesLegacy => count("iptables-legacy-save", &["-t", "nat"], "\n:KUBE-SVC-"),
        Mode::IptablesNft => count("iptables-nft-save", &["-t", "nat"], "\n:KUBE-SVC-"),
        Mode::Ipvs => count("ipvsadm", &["-Sn"], "-A "),
        Mode::Nftables => count("nft", &["list", "map", "ip", "kube-proxy", "service-ips"], "goto service-"),
    }
}

#[test]
fn printed_rules_load_with_the_real_tools_in_a_private_namespace() {
    let name = "printed_rules_load_with_the_real_tools_in_a_private_namespace";
    if !is_root() {
        return skip(name, "needs root (private network namespaces)");
    }
    let before = root_network_state();
    let mut loaded = Vec::new();
    for mode in Mode::ALL {
        if let Some(why) = mode.unavailable_reason(Scheduler::default()) {
            skip(&format!("{name} ({mode})"), &why);
            continue;
        }
        let ns = NetNs::new("rules").unwrap();
        replay(mode, &ns);
        assert_eq!(listed_service_ports(mode, &ns), SERVICE_PORTS, "{mode}");
        loaded.push(mode);
    }
    assert!(!loaded.is_empty(), "no mode can run here");
    assert_eq!(before, root_network_state(), "the root namespace changed");
}
