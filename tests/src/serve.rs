//! `pathcost serve` for the tests that scrape it (tests/tests/serve.rs,
//! tests/tests/serve_load.rs): the node namespace's serve process, HTTP
//! requests from inside that namespace, and a parser of the Prometheus
//! text exposition.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use tracer::synthesis::{ipvs::Scheduler, program::Mode, topology::Topology};

use crate::{is_root, kprobe_skip_reason, pathcost_bin};

/// Which probes the child attaches here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probes {
    /// Default sites (fentry/kprobe): the VM.
    Functions,
    /// The tracepoint bracket: kernels without kprobes.
    Bracket,
}

pub fn setup() -> Result<Probes, String> {
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
pub type Series = (String, BTreeMap<String, String>);

/// A parsed Prometheus text exposition.
#[derive(Debug, Default)]
pub struct Exposition {
    pub types: BTreeMap<String, String>,
    pub samples: BTreeMap<Series, f64>,
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

pub fn parse_exposition(text: &str) -> Exposition {
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
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        want: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = (&'a BTreeMap<String, String>, f64)> + 'a {
        self.samples
            .iter()
            .filter(move |((n, l), _)| n == name && want.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
            .map(|((_, l), v)| (l, *v))
    }

    pub fn sum(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.matching(name, want).map(|(_, v)| v).sum()
    }

    pub fn one(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = self.matching(name, want).map(|(_, v)| v).collect();
        assert_eq!(found.len(), 1, "{name}{want:?}: {found:?}");
        found[0]
    }
}

/// `pathcost serve` inside the node namespace, with its stderr collected.
/// How serve collects: its default (in-kernel aggregates) or events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Collect {
    Kernel,
    Events,
}

pub struct Server {
    pub child: Child,
    pub address: SocketAddr,
    stderr: mpsc::Receiver<String>,
    stderr_lines: Vec<String>,
}

impl Server {
    /// `pathcost serve` as it runs by default (in-kernel aggregates).
    pub fn start(topo: &Topology, probes: Probes) -> Server {
        Server::start_collecting(topo, probes, Collect::Kernel)
    }

    pub fn start_collecting(topo: &Topology, probes: Probes, collect: Collect) -> Server {
        let mut cmd = pathcost_in_node_ns(topo);
        // /proc/self is the child's own: the node namespace once entered.
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--netns", "/proc/self/ns/net", "--refresh", "1s"]);
        if probes == Probes::Bracket {
            cmd.args(["--backend", "bracket"]);
        }
        if collect == Collect::Events {
            cmd.args(["--collect", "events"]);
        }
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn pathcost serve");
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

    pub fn wait_for_line(&mut self, marker: &str, timeout: Duration) -> String {
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

/// The node namespace's file: it is held by one of this process's threads.
pub fn node_ns_path(topo: &Topology) -> String {
    format!("/proc/{}/task/{}/ns/net", std::process::id(), topo.node.tid())
}

/// A `pathcost` command that runs inside the node namespace (entered
/// with setns between fork and exec), so that what it reads and measures
/// is the synthetic node's and nothing of the host's.
pub fn pathcost_in_node_ns(topo: &Topology) -> Command {
    let path = std::ffi::CString::new(node_ns_path(topo)).unwrap();
    let mut cmd = Command::new(pathcost_bin());
    // SAFETY: between fork and exec only async-signal-safe calls (open,
    // setns, close) on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        });
    }
    cmd
}

/// Moves the calling thread into the node namespace (network namespaces
/// are per thread), so that it can reach serve on the node's loopback
/// without queueing behind the namespace's own thread.
pub fn enter_node_ns(topo: &Topology) {
    let ns = File::open(node_ns_path(topo)).unwrap();
    // SAFETY: setns changes only this thread's network namespace; `ns` is open.
    let entered = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(entered, 0, "setns into the node namespace: {}", std::io::Error::last_os_error());
}

/// One HTTP request from the calling thread's namespace: (status line,
/// content type, body).
pub fn get(address: SocketAddr, path: &str, accept: Option<&str>) -> std::io::Result<(String, String, String)> {
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: pathcost\r\n{}Connection: close\r\n\r\n",
        accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default()
    );
    let mut s = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(head.as_bytes())?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not an HTTP response: {raw:?}"));
    let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head.lines().next().unwrap_or_default().to_owned();
    let content_type = head.lines().find_map(|l| l.strip_prefix("Content-Type: ")).unwrap_or_default().to_owned();
    Ok((status, content_type, body.to_owned()))
}

/// One HTTP request from inside the node namespace (on its thread).
pub fn request(topo: &Topology, address: SocketAddr, path: &str, accept: Option<&str>) -> (String, String, String) {
    let (shown, path, accept) = (path.to_owned(), path.to_owned(), accept.map(str::to_owned));
    topo.node
        .run(move || get(address, &path, accept.as_deref()))
        .unwrap()
        .unwrap_or_else(|e| panic!("GET {shown} from {address}: {e}"))
}

/// A scrape that must answer 200 in the classic text format, parsed.
pub fn scrape(topo: &Topology, address: SocketAddr) -> Exposition {
    let (status, content_type, body) = request(topo, address, "/metrics", None);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    parse_exposition(&body)
}
