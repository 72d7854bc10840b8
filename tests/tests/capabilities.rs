//! The DaemonSet's capability set, proven rather than claimed: `pathcost
//! detect` and `pathcost serve` run as root with exactly the capabilities
//! deploy/kubernetes/02-daemonset.yaml adds after dropping ALL (read from
//! the manifest here, never restated), on a node namespace holding iptables
//! mode's rules through either iptables backend, and must find what they
//! find with every capability: mode `iptables`, the backend, the service
//! ports, nothing unreadable, and (serve) probes attached and ready.
//!
//! The capabilities are limited with setpriv(1): for root, exec gives a
//! process its bounding set as permitted and effective capabilities, which
//! is what a container runtime does with `capabilities.add`. A control run
//! without NET_RAW shows the test can fail: iptables-legacy-save (libiptc)
//! then cannot open its raw socket, and legacy nodes read as unreadable.
//!
//! Runs on the host (bracket backend) and in the test VM (kprobes); needs
//! root and setpriv (the VM's initramfs ships util-linux's).

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use pathcost_tests::{
    daemonset_capabilities, daemonset_container, is_root, kprobe_skip_reason, loaded_ours_after_exit, pathcost_bin,
    skip,
};
use serde_json::Value;
use tracer::netns::NetNs;

/// kube-proxy iptables mode's rules for 2 services x 2 endpoints, kubelet's
/// chains included, in iptables-save format (either backend restores it).
const RULES: &str = include_str!("../../tracer/src/synthesis/fixtures/iptables_2x2.save");

/// serve's port inside each private namespace.
const PORT: u16 = 9470;

#[derive(Clone, Copy, Debug)]
enum Backend {
    Legacy,
    Nft,
}

impl Backend {
    /// The tools' prefix, and the `iptables_backend` label of the metrics.
    fn name(self) -> &'static str {
        match self {
            Backend::Legacy => "iptables-legacy",
            Backend::Nft => "iptables-nft",
        }
    }

    /// detect's JSON name for it.
    fn json(self) -> &'static str {
        match self {
            Backend::Legacy => "legacy",
            Backend::Nft => "nft",
        }
    }
}

/// setpriv's arguments that leave exactly `caps` (lower-case names).
fn only(caps: &[String]) -> Vec<String> {
    let list: String = caps.iter().map(|c| format!(",+{c}")).collect();
    vec!["--inh-caps=-all".into(), format!("--bounding-set=-all{list}"), "--".into()]
}

/// A private namespace holding iptables mode's rules in `backend`.
fn node(backend: Backend) -> NetNs {
    let ns = NetNs::new(&format!("caps-{}", backend.name())).expect("a private network namespace");
    ns.cmd_with_input(&format!("{}-restore", backend.name()), &[], Some(RULES.to_owned()))
        .unwrap_or_else(|e| panic!("loading the rules with {}-restore: {e:#}", backend.name()));
    ns
}

fn detect(ns: &NetNs, caps: &[String]) -> (Output, Value) {
    let args = only(caps);
    let out = ns
        .run(move || {
            Command::new("setpriv")
                .args(&args)
                .arg(pathcost_bin())
                .args(["detect", "--format", "json", "--metrics-address", "none"])
                .output()
        })
        .unwrap()
        .expect("run setpriv pathcost detect");
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("detect's JSON: {e}\nstderr: {}", String::from_utf8_lossy(&out.stderr))
    });
    (out, json)
}

/// `GET path` on serve's port in `ns`: (status code, body); `None` while
/// nothing listens.
fn get(ns: &NetNs, path: &str) -> Option<(u16, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: pathcost\r\n\r\n");
    ns.run(move || -> Option<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", PORT)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        s.write_all(request.as_bytes()).ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let code = head.split(' ').nth(1)?.parse().ok()?;
        Some((code, body.to_owned()))
    })
    .unwrap()
}

/// The DaemonSet's own arguments, with the node IP the downward API would
/// give replaced by the namespace's loopback.
fn daemonset_args() -> Vec<String> {
    let args = daemonset_container()["args"].as_array().expect("args").clone();
    args.iter().map(|a| a.as_str().unwrap().replace("$(NODE_IP)", "127.0.0.1")).collect()
}

fn sigterm(child: &Child) {
    // SAFETY: kill(2) on our own child's pid, which it still has (not yet
    // waited for).
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
}

fn check_detection(backend: Backend, json: &Value, stderr: &[u8]) {
    let why = || format!("{backend:?}: {json:#}\nstderr: {}", String::from_utf8_lossy(stderr));
    assert_eq!(json["unreadable"], Value::Array(vec![]), "an input could not be read: {}", why());
    assert_eq!(json["proxy_mode"]["mode"], "iptables", "{}", why());
    assert_eq!(json["iptables_backend"]["active"], backend.json(), "{}", why());
    let ports = json["services"]["iptables"][0]["service_ports"].as_u64().unwrap_or(0);
    assert!(ports > 0, "no service ports counted: {}", why());
}

/// serve with the DaemonSet's args and capabilities: ready (probes
/// attached, reader polling, detection succeeded), the node labels right,
/// and SIGTERM leaves nothing loaded.
fn check_serve(backend: Backend, ns: &NetNs, caps: &[String]) {
    let mut args = only(caps);
    args.push(pathcost_bin().to_string_lossy().into_owned());
    args.extend(daemonset_args());
    eprintln!("{backend:?}: setpriv {}", args.join(" "));
    let mut child = ns
        .run(move || Command::new("setpriv").args(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn())
        .unwrap()
        .expect("spawn setpriv pathcost serve");
    // Calibration under emulation takes a while.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(exited) = child.try_wait().unwrap() {
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("{backend:?}: serve exited with {exited} before it was ready:\n{err}");
        }
        last = get(ns, "/readyz");
        if last.as_ref().is_some_and(|(code, _)| *code == 200) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let ready = last.as_ref().is_some_and(|(code, _)| *code == 200);
    let metrics = get(ns, "/metrics").map(|(_, body)| body).unwrap_or_default();
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(ready, "{backend:?}: /readyz never answered 200; last: {last:?}\nstderr:\n{stderr}");
    let info = metrics.lines().find(|l| l.starts_with("pathcost_node_info{")).unwrap_or("");
    assert!(
        info.contains("kube_proxy_mode=\"iptables\"") && info.contains(&format!("iptables_backend=\"{}\"", backend.name())),
        "{backend:?}: {info}\n{stderr}"
    );
    assert!(
        !metrics.lines().any(|l| l.starts_with("pathcost_detection_unreadable_inputs{")),
        "{backend:?}: unreadable inputs under the DaemonSet's capabilities:\n{metrics}"
    );
    // Where kprobes exist (the VM), the function probes themselves must
    // attach under these capabilities, not only the tracepoint bracket.
    if kprobe_skip_reason().is_none() {
        let functions = metrics.lines().any(|l| {
            l.starts_with("pathcost_probe_info{") && (l.contains("mechanism=\"kprobe\"") || l.contains("mechanism=\"fentry\""))
        });
        assert!(functions, "{backend:?}: no function probe attached:\n{metrics}\n{stderr}");
    }
    assert!(out.status.success(), "{backend:?}: serve after SIGTERM: {}\n{stderr}", out.status);
    let left = loaded_ours_after_exit();
    assert!(left.is_empty(), "{backend:?}: programs left loaded: {left:?}");
}

#[test]
fn detect_and_serve_work_with_exactly_the_daemonsets_capabilities() {
    const TEST: &str = "detect_and_serve_work_with_exactly_the_daemonsets_capabilities";
    if !is_root() {
        return skip(TEST, "needs root");
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        return skip(TEST, "setpriv (util-linux) is not installed");
    }
    let caps = daemonset_capabilities();
    eprintln!("the DaemonSet's capabilities: {caps:?}");
    for backend in [Backend::Legacy, Backend::Nft] {
        let ns = node(backend);
        let (out, json) = detect(&ns, &caps);
        assert!(out.status.success(), "{backend:?}: {}", String::from_utf8_lossy(&out.stderr));
        check_detection(backend, &json, &out.stderr);
        check_serve(backend, &ns, &caps);
    }
}

/// The control: the same run without NET_RAW loses the legacy backend, so
/// the test above would fail if the DaemonSet lacked it.
#[test]
fn without_net_raw_legacy_rules_are_unreadable() {
    const TEST: &str = "without_net_raw_legacy_rules_are_unreadable";
    if !is_root() {
        return skip(TEST, "needs root");
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        return skip(TEST, "setpriv (util-linux) is not installed");
    }
    let caps: Vec<String> = daemonset_capabilities().into_iter().filter(|c| c != "net_raw").collect();
    let ns = node(Backend::Legacy);
    let (_, json) = detect(&ns, &caps);
    let unreadable = json["unreadable"].as_array().cloned().unwrap_or_default();
    assert!(
        unreadable.iter().any(|u| u["input"] == "iptables-legacy rules"),
        "without NET_RAW iptables-legacy-save should fail: {json:#}"
    );
    assert_ne!(json["proxy_mode"]["mode"], "iptables", "{json:#}");
}
