//! `pathcost serve` scraped while traffic flows through a kube-proxy-shaped
//! node namespace (iptables-legacy rules for a few services):
//! - the exposition parses, every metric family is there with its labels;
//! - per-call counts grow by exactly the number of new connections sent,
//!   twice, and the kernel's own counters agree;
//! - the node labels come from detection run in that namespace
//!   (kube_proxy_mode="iptables", the service count);
//! - SIGTERM stops serving and leaves no program loaded.
//!
//! `pathcost serve` runs as a child process inside the node namespace
//! (entered with setns before exec), listening on its loopback, so its
//! detection sees the synthetic rules and nothing of the host's. With
//! kprobes (the test VM) it attaches the default sites; without them (the
//! build host) the tracepoint bracket. Needs root; skips with the reason
//! otherwise.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, SocketAddrV4, TcpStream},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use pathcost_tests::{is_root, kprobe_skip_reason, loaded_ours, loaded_ours_after_exit, pathcost_bin, skip};
use tracer::synthesis::{
    cluster::{Cluster, ClusterSpec, Protocol},
    ipvs::Scheduler,
    program::{program, Mode},
    topology::Topology,
    traffic::{self, Pace},
};

const SERVICES: u32 = 12;
const CONNECTIONS: u32 = 200;
/// Endpoints listen here (the cluster's default target port).
const ENDPOINT_PORT: u16 = 80;

/// Which probes the child attaches here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Probes {
    /// Default sites (fentry/kprobe): the VM.
    Functions,
    /// The tracepoint bracket: kernels without kprobes.
    Bracket,
}

fn setup() -> Result<Probes, String> {
    if !is_root() {
        return Err("needs root".into());
    }
    if let Some(why) = Mode::IptablesLegacy.unavailable_reason(Scheduler::default()) {
        return Err(why);
    }
    if kprobe_skip_reason().is_none() {
        return Ok(Probes::Functions);
    }
    match tracer::capabilities::bracket_unavailable_reason() {
        None => Ok(Probes::Bracket),
        Some(why) => Err(format!("neither kprobes nor the bracket tracepoints: {why}")),
    }
}

/// One sample's identity: name and sorted labels.
type Series = (String, BTreeMap<String, String>);

/// A parsed Prometheus text exposition.
#[derive(Debug, Default)]
struct Exposition {
    types: BTreeMap<String, String>,
    samples: BTreeMap<Series, f64>,
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("bad labels {text}"));
        // Values here never contain escaped quotes.
        let (value, after) = after.split_once('"').unwrap_or_else(|| panic!("bad labels {text}"));
        labels.insert(key.to_owned(), value.to_owned());
        rest = after.strip_prefix(',').unwrap_or(after);
    }
    labels
}

fn parse_exposition(text: &str) -> Exposition {
    let mut e = Exposition::default();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            let (name, kind) = t.split_once(' ').unwrap();
            e.types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, parse_labels(l.strip_suffix('}').unwrap())),
            None => (series, BTreeMap::new()),
        };
        let value: f64 =
            if value == "+Inf" { f64::INFINITY } else { value.parse().unwrap_or_else(|_| panic!("bad value {line}")) };
        let key = (name.to_owned(), labels);
        assert!(e.samples.insert(key, value).is_none(), "duplicate series: {line}");
    }
    e
}

impl Exposition {
    /// Samples of `name` whose labels include `want`.
    fn matching<'a>(
        &'a self,
        name: &'a str,
        want: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = (&'a BTreeMap<String, String>, f64)> + 'a {
        self.samples
            .iter()
            .filter(move |((n, l), _)| n == name && want.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
            .map(|((_, l), v)| (l, *v))
    }

    fn sum(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.matching(name, want).map(|(_, v)| v).sum()
    }

    fn one(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = self.matching(name, want).map(|(_, v)| v).collect();
        assert_eq!(found.len(), 1, "{name}{want:?}: {found:?}");
        found[0]
    }
}

/// `pathcost serve` inside the node namespace, with its stderr collected.
struct Server {
    child: Child,
    address: SocketAddr,
    stderr: mpsc::Receiver<String>,
    stderr_lines: Vec<String>,
}

impl Server {
    fn start(topo: &Topology, probes: Probes) -> Server {
        // The node namespace is held by one of this process's threads.
        let ns_path = format!("/proc/{}/task/{}/ns/net", std::process::id(), topo.node.tid());
        let ns = File::open(&ns_path).unwrap();
        let mut cmd = Command::new(pathcost_bin());
        // /proc/self is the child's own: the node namespace once entered.
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--netns", "/proc/self/ns/net", "--refresh", "1s"]);
        if probes == Probes::Bracket {
            cmd.args(["--backend", "bracket"]);
        }
        let fd = ns.as_raw_fd();
        // SAFETY: setns is async-signal-safe; `ns` stays open until spawn
        // returns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn pathcost serve");
        drop(ns);
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[serve] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server { child, address: "0.0.0.0:0".parse().unwrap(), stderr: rx, stderr_lines: Vec::new() };
        // Calibration under emulation takes a while.
        let line = server.wait_for_line("serving metrics on http://", Duration::from_secs(240));
        let address = line.split("http://").nth(1).and_then(|r| r.strip_suffix("/metrics")).unwrap();
        server.address = address.parse().unwrap();
        server
    }

    fn wait_for_line(&mut self, marker: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.stderr_lines.iter().find(|l| l.contains(marker)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => self.stderr_lines.push(line),
                Err(e) => {
                    let _ = self.child.kill();
                    panic!("no '{marker}' from pathcost serve ({e}); it said:\n{}", self.stderr_lines.join("\n"));
                }
            }
        }
    }
}

impl Drop for Server {
    /// A failed assertion must not leave the child attached.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One HTTP request from inside the node namespace: (status line,
/// content type, body).
fn request(topo: &Topology, address: SocketAddr, path: &str, accept: Option<&str>) -> (String, String, String) {
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: pathcost\r\n{}Connection: close\r\n\r\n",
        accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default()
    );
    let raw = topo
        .node
        .run(move || -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            s.write_all(head.as_bytes())?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })
        .unwrap()
        .unwrap_or_else(|e| panic!("GET {path} from {address}: {e}"));
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.lines().next().unwrap().to_owned();
    let content_type = head.lines().find_map(|l| l.strip_prefix("Content-Type: ")).unwrap_or_default().to_owned();
    (status, content_type, body.to_owned())
}

fn scrape(topo: &Topology, address: SocketAddr) -> Exposition {
    let (status, content_type, body) = request(topo, address, "/metrics", None);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    parse_exposition(&body)
}

/// Labels that pick series out of an exposition.
type Selector = Vec<(&'static str, &'static str)>;

/// The series that counts each new connection once, and its kernel twin.
fn counted_series(probes: Probes) -> (Selector, Selector) {
    match probes {
        // The nat table is consulted for the first packet of a connection only.
        Probes::Functions => (
            vec![("site", "ipt_do_table"), ("hook", "PRE_ROUTING"), ("table", "nat"), ("mechanism", "kprobe")],
            vec![("site", "ipt_do_table"), ("hook", "PRE_ROUTING")],
        ),
        Probes::Bracket => (
            vec![("site", "prerouting_bracket"), ("hook", "PRE_ROUTING"), ("mechanism", "bracket")],
            vec![("site", "prerouting_bracket"), ("hook", "PRE_ROUTING")],
        ),
    }
}

/// Scrapes until `series` has grown by `by` since `before` (the ring
/// buffer is read asynchronously), then returns that scrape.
fn scrape_after(
    topo: &Topology,
    address: SocketAddr,
    before: &Exposition,
    series: &[(&str, &str)],
    by: f64,
) -> Exposition {
    let name = "pathcost_call_duration_seconds_count";
    let start = before.sum(name, series);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = scrape(topo, address);
        let grown = now.sum(name, series) - start;
        if grown >= by || Instant::now() > deadline {
            // A moment more, so a count that overshoots shows up.
            std::thread::sleep(Duration::from_millis(500));
            return scrape(topo, address);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// New connections over every service in turn. Source ports restart at the
/// same number each round, so round `r` shifts the services by `r`: a
/// repeated 5-tuple would be a conntrack hit, not a new connection.
fn send_connections(topo: &Topology, cluster: &Cluster, round: usize) {
    let ports = cluster.service_ports();
    let targets = (0..CONNECTIONS as usize)
        .map(|i| {
            let sp = &ports[(i + round) % ports.len()];
            (sp.protocol, SocketAddrV4::new(sp.cluster_ip, sp.port))
        })
        .collect();
    let sent = traffic::new_connections(topo, targets, Pace { rate: 0, max_time: Duration::from_secs(120) }).unwrap();
    assert_eq!(sent.packets, u64::from(CONNECTIONS));
}

fn check_families(e: &Exposition, probes: Probes) {
    for (name, kind) in [
        ("pathcost_call_duration_seconds", "histogram"),
        ("pathcost_call_self_duration_seconds", "histogram"),
        ("pathcost_call_corrected_duration_seconds", "histogram"),
        ("pathcost_call_self_corrected_duration_seconds", "histogram"),
        ("pathcost_kernel_call_duration_seconds", "histogram"),
        ("pathcost_kernel_call_self_seconds_total", "counter"),
        ("pathcost_kernel_call_max_seconds", "gauge"),
        ("pathcost_packet_netfilter_duration_seconds", "histogram"),
        ("pathcost_packet_netfilter_corrected_duration_seconds", "histogram"),
        ("pathcost_events_lost_total", "counter"),
        ("pathcost_probe_events_total", "counter"),
        ("pathcost_probe_pair_cost_seconds", "gauge"),
        ("pathcost_probe_span_cost_seconds", "gauge"),
        ("pathcost_probe_info", "gauge"),
        ("pathcost_node_info", "gauge"),
        ("pathcost_kube_services", "gauge"),
        ("pathcost_kube_endpoints", "gauge"),
        ("pathcost_detection_runs_total", "counter"),
        ("pathcost_detection_last_success_timestamp_seconds", "gauge"),
    ] {
        assert_eq!(e.types.get(name).map(String::as_str), Some(kind), "TYPE of {name}: {:?}", e.types);
    }
    for reason in [
        "ring_reserve_failures",
        "unmatched_exits",
        "orphaned_frames",
        "depth_overflows",
        "negative_durations",
        "undecodable_events",
        "brackets_unclosed",
    ] {
        e.one("pathcost_events_lost_total", &[("reason", reason)]);
    }
    for kind in ["entries", "matched", "brackets_opened", "brackets_closed"] {
        e.one("pathcost_probe_events_total", &[("kind", kind)]);
    }
    match probes {
        Probes::Bracket => {
            e.one("pathcost_probe_info", &[("site", "prerouting_bracket"), ("mechanism", "bracket")]);
            e.one(
                "pathcost_packet_netfilter_duration_seconds_count",
                &[("site", "prerouting_bracket"), ("mechanism", "bracket")],
            );
        }
        Probes::Functions => {
            e.one("pathcost_probe_info", &[("site", "ipt_do_table"), ("mechanism", "kprobe")]);
            e.one("pathcost_packet_netfilter_duration_seconds_count", &[("site", "nf_hook_slow")]);
            // Calibrated at start-up, so the self-cost gauges have a value.
            assert!(e.matching("pathcost_probe_pair_cost_seconds", &[]).count() > 0, "no self cost");
        }
    }
}

/// Node labels from detection in the node namespace, where the test's
/// iptables-legacy rules are kube-proxy's.
fn check_node(e: &Exposition, service_ports: usize) {
    if std::process::Command::new("iptables-legacy-save").arg("--version").output().is_err() {
        return skip("serve: node labels", "iptables-legacy-save is not installed, so detection cannot read the rules");
    }
    let (labels, v) = e.matching("pathcost_node_info", &[]).next().expect("pathcost_node_info");
    assert_eq!(v, 1.0);
    assert_eq!(labels["kube_proxy_mode"], "iptables", "{labels:?}");
    assert_eq!(labels["iptables_backend"], "iptables-legacy", "{labels:?}");
    assert_eq!(labels["kernel"], tracer::capabilities::kernel_release());
    let active = [("kube_proxy_mode", "iptables"), ("source", "iptables-legacy"), ("active", "true")];
    assert_eq!(e.one("pathcost_kube_services", &active), service_ports as f64);
    assert!(e.one("pathcost_kube_endpoints", &active) >= service_ports as f64);
}

#[test]
fn serve_exposes_growing_counts_and_detaches_on_sigterm() {
    let probes = match setup() {
        Ok(p) => p,
        Err(why) => return skip("serve_exposes_growing_counts_and_detaches_on_sigterm", &why),
    };
    assert!(loaded_ours().is_empty(), "leftovers before the test: {:?}", loaded_ours());
    let cluster = Cluster::new(ClusterSpec::new(SERVICES, 2).with_protocols(vec![Protocol::Udp])).unwrap();
    let topo = Topology::build().unwrap();
    program(Mode::IptablesLegacy, &cluster, Scheduler::default(), &topo.node).unwrap();
    // A listening endpoint: no ICMP port-unreachable comes back into the
    // node to be counted as traffic.
    let backend = traffic::Backend::start(&topo, ENDPOINT_PORT).unwrap();

    let mut server = Server::start(&topo, probes);
    let address = server.address;
    eprintln!("serve: {probes:?} probes, metrics at {address}");

    // Other paths.
    // Attached and polling: healthy (readiness waits for detection, below).
    let (status, _, body) = request(&topo, address, "/healthz", None);
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(body.starts_with("ok\nprobes: ok: "), "{body}");
    let (status, _, _) = request(&topo, address, "/nothing-here", None);
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, content_type, body) =
        request(&topo, address, "/metrics", Some("application/openmetrics-text;version=1.0.0"));
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    assert!(body.ends_with("# EOF\n"));

    // Detection runs beside attaching; wait for its first answer.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut before = scrape(&topo, address);
    while before.matching("pathcost_node_info", &[]).next().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        before = scrape(&topo, address);
    }
    check_node(&before, cluster.service_ports().len());
    let (status, _, body) = request(&topo, address, "/readyz", None);
    assert_eq!(status, "HTTP/1.1 200 OK", "detection succeeded, so ready: {body}");

    let (calls, kernel) = counted_series(probes);
    let mut previous = before;
    for round in 0..2 {
        send_connections(&topo, &cluster, round);
        let after = scrape_after(&topo, address, &previous, &calls, f64::from(CONNECTIONS));
        let grown = |name: &str, want: &[(&str, &str)]| after.sum(name, want) - previous.sum(name, want);
        let n = f64::from(CONNECTIONS);
        // Per-call families appear with their first call.
        check_families(&after, probes);
        assert_eq!(grown("pathcost_call_duration_seconds_count", &calls), n, "round {round}");
        assert_eq!(grown("pathcost_call_self_duration_seconds_count", &calls), n, "round {round}");
        assert!(grown("pathcost_call_duration_seconds_sum", &calls) > 0.0);
        let mut inf = calls.clone();
        inf.push(("le", "+Inf"));
        assert_eq!(
            after.sum("pathcost_call_duration_seconds_bucket", &inf),
            after.sum("pathcost_call_duration_seconds_count", &calls)
        );
        // The kernel's own count sees every namespace's calls for function
        // sites, so at least these; the bracket is filtered in the kernel.
        let in_kernel = grown("pathcost_kernel_call_duration_seconds_count", &kernel);
        match probes {
            Probes::Bracket => {
                assert_eq!(in_kernel, n, "round {round}");
                assert_eq!(grown("pathcost_probe_events_total", &[("kind", "brackets_closed")]), n);
            }
            Probes::Functions => assert!(in_kernel >= n, "round {round}: {in_kernel}"),
        }
        assert!(
            grown("pathcost_packet_netfilter_duration_seconds_count", &[]) > 0.0,
            "round {round}: no packet finished"
        );
        assert_eq!(after.sum("pathcost_events_lost_total", &[("reason", "undecodable_events")]), 0.0);
        previous = after;
    }
    assert_eq!(backend.udp_received(), 2 * u64::from(CONNECTIONS), "the rules did not forward every connection");
    // --refresh 1s: detection runs again (each run takes a moment).
    let deadline = Instant::now() + Duration::from_secs(60);
    let runs = loop {
        let runs = scrape(&topo, address).one("pathcost_detection_runs_total", &[("outcome", "ok")]);
        if runs >= 2.0 || Instant::now() > deadline {
            break runs;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(runs >= 2.0, "detection was not refreshed: {runs} runs in a minute");

    // Shutdown.
    assert!(!loaded_ours().is_empty(), "pathcost serve has no program loaded?");
    // SAFETY: our own child, by its pid.
    assert_eq!(unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "pathcost serve still running 60 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "pathcost serve exited with {status}");
    server.wait_for_line("every probe is detached", Duration::from_secs(5));
    let left = loaded_ours_after_exit();
    assert!(left.is_empty(), "programs left after SIGTERM: {left:?}");
    let refused = topo.node.run(move || TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_err()).unwrap();
    assert!(refused, "still listening on {address} after exit");
}
