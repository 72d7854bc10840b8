//! What the node's own tools and files say, collected read-only: the raw
//! texts that the parsers beside this module read. Kept raw so that a node's
//! state can be stored as fixture files and judged again offline.
//!
//! Collection never writes and avoids what would change the node:
//! `iptables-legacy-save` runs only when `/proc/net/ip_tables_names` lists
//! tables (on a kernel without legacy tables it could autoload the x_tables
//! modules), and `nft`/`iptables-nft-save`/`ipset` run only when nf_tables or
//! ip_set is already in the kernel (their netlink requests would otherwise
//! autoload the module). A missing tool is recorded as unknown, not an error.

use std::{
    fmt::Write as _,
    fs,
    io::Read as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::{ipvs, nftables, proxy_mode};

/// One input of the analysis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// What the tool printed or the file held.
    Text(String),
    /// Checked: the thing does not exist (no such device, module not loaded).
    Absent(String),
    /// Could not be checked (tool not installed, permission denied, timeout).
    Unknown(String),
}

impl Input {
    pub fn text(&self) -> Option<&str> {
        match self {
            Input::Text(t) => Some(t),
            _ => None,
        }
    }

    pub fn unknown(&self) -> Option<&str> {
        match self {
            Input::Unknown(why) => Some(why),
            _ => None,
        }
    }
}

/// Everything `detect` reads about kube-proxy's state on the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeState {
    /// `GET /proxyMode` on kube-proxy's metrics address: the answer's body.
    pub proxy_mode: Input,
    /// `/proc/net/ip_tables_names`: legacy (x_tables) IPv4 tables.
    pub ip_tables_names: Input,
    /// `/proc/net/ip6_tables_names`.
    pub ip6_tables_names: Input,
    pub iptables_legacy_save: Input,
    pub iptables_nft_save: Input,
    /// `nft -j list ...` documents, one per line: tables, then for each
    /// `kube-proxy` table its chains, `service-ips` and `cluster-ips`.
    pub nft: Input,
    /// `/proc/net/ip_vs`.
    pub ip_vs: Input,
    /// `ip -d -j addr show dev kube-ipvs0`.
    pub kube_ipvs0: Input,
    /// `ipset list -n`.
    pub ipset_names: Input,
    /// `ipset list -t KUBE-CLUSTER-IP`.
    pub ipset_cluster_ip: Input,
}

/// Fixture file names, one per [`NodeState`] field.
const FILES: [&str; 10] = [
    "proxyMode",
    "ip_tables_names",
    "ip6_tables_names",
    "iptables-legacy-save",
    "iptables-nft-save",
    "nft.jsonl",
    "ip_vs",
    "kube-ipvs0.json",
    "ipset-list-n",
    "ipset-list-t-KUBE-CLUSTER-IP",
];

impl NodeState {
    fn fields(&self) -> [&Input; 10] {
        [
            &self.proxy_mode,
            &self.ip_tables_names,
            &self.ip6_tables_names,
            &self.iptables_legacy_save,
            &self.iptables_nft_save,
            &self.nft,
            &self.ip_vs,
            &self.kube_ipvs0,
            &self.ipset_names,
            &self.ipset_cluster_ip,
        ]
    }

    /// Reads a state stored by [`NodeState::save_dir`]: `NAME` holds the
    /// text, `NAME.absent` or `NAME.unknown` the reason there is none; a
    /// field with no file is unknown.
    pub fn load_dir(dir: &Path) -> Result<NodeState> {
        let read = |name: &str| -> Result<Input> {
            let path = dir.join(name);
            let reason = |ext: &str| fs::read_to_string(dir.join(format!("{name}.{ext}"))).ok();
            if path.exists() {
                let text = fs::read_to_string(&path)
                    .with_context(|| format!("failed to read {}", path.display()))?;
                Ok(Input::Text(text))
            } else if let Some(why) = reason("absent") {
                Ok(Input::Absent(why.trim().to_owned()))
            } else if let Some(why) = reason("unknown") {
                Ok(Input::Unknown(why.trim().to_owned()))
            } else {
                Ok(Input::Unknown(format!("{name} not in {}", dir.display())))
            }
        };
        let [a, b, c, d, e, f, g, h, i, j] = FILES;
        Ok(NodeState {
            proxy_mode: read(a)?,
            ip_tables_names: read(b)?,
            ip6_tables_names: read(c)?,
            iptables_legacy_save: read(d)?,
            iptables_nft_save: read(e)?,
            nft: read(f)?,
            ip_vs: read(g)?,
            kube_ipvs0: read(h)?,
            ipset_names: read(i)?,
            ipset_cluster_ip: read(j)?,
        })
    }

    /// Writes the state as files, replacing those of the same names.
    pub fn save_dir(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
        for (name, input) in FILES.iter().zip(self.fields()) {
            for ext in ["", ".absent", ".unknown"] {
                let _ = fs::remove_file(dir.join(format!("{name}{ext}")));
            }
            let (file, content) = match input {
                Input::Text(t) => (name.to_string(), t.clone()),
                Input::Absent(why) => (format!("{name}.absent"), format!("{why}\n")),
                Input::Unknown(why) => (format!("{name}.unknown"), format!("{why}\n")),
            };
            let path = dir.join(file);
            fs::write(&path, content)
                .with_context(|| format!("failed to write {}", path.display()))?;
        }
        Ok(())
    }
}

/// How to collect.
#[derive(Clone, Debug)]
pub struct CollectOptions {
    /// kube-proxy's metrics address; `None` skips the query.
    pub metrics_address: Option<SocketAddr>,
    pub query_timeout: Duration,
    /// Longest any one tool may run (a 10,000-service iptables-save takes
    /// about a second).
    pub tool_timeout: Duration,
    /// Longest the kernel may take to answer one netlink request.
    pub netlink_timeout: Duration,
}

impl Default for CollectOptions {
    fn default() -> Self {
        CollectOptions {
            metrics_address: proxy_mode::DEFAULT_METRICS_ADDRESS.parse().ok(),
            query_timeout: proxy_mode::QUERY_TIMEOUT,
            tool_timeout: Duration::from_secs(60),
            netlink_timeout: Duration::from_secs(10),
        }
    }
}

/// Kernel subsystems whose netlink families autoload their module when
/// asked; their tools run only when the subsystem is already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subsystems {
    pub nf_tables: bool,
    pub ip_set: bool,
}

/// Where programs are looked for besides `$PATH` (a non-root `$PATH` often
/// lacks the sbin directories).
const EXTRA_PATH: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_PATH.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs the first installed program of `candidates` (program, args) and
/// returns its stdout, or why there is none.
pub(super) fn run_tool(candidates: &[(&str, &[&str])], timeout: Duration) -> Input {
    let Some((path, program, args)) = candidates
        .iter()
        .find_map(|(p, a)| find_program(p).map(|path| (path, *p, *a)))
    else {
        let names: Vec<&str> = candidates.iter().map(|(p, _)| *p).collect();
        return Input::Unknown(format!("{} not installed", names.join(" / ")));
    };
    let shown = [program]
        .iter()
        .chain(args.iter())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    match run_with_timeout(&path, args, timeout) {
        Ok((true, stdout, _)) => Input::Text(stdout),
        Ok((false, _, stderr)) => {
            let first = stderr
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no message");
            Input::Unknown(format!("`{shown}` failed: {}", first.trim()))
        }
        Err(e) => Input::Unknown(format!("`{shown}`: {e:#}")),
    }
}

/// (success, stdout, stderr); the child is killed after `timeout`.
fn run_with_timeout(
    path: &Path,
    args: &[&str],
    timeout: Duration,
) -> Result<(bool, String, String)> {
    let mut child = Command::new(path)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to run {}", path.display()))?;
    // Drain both pipes on threads so a large dump cannot block the child.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > timeout {
            // Our own child, killed by its handle.
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("timed out after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Ok((status.success(), stdout, stderr))
}

/// `/proc/thread-self/net/NAME`: the calling thread's network namespace
/// (`/proc/net` follows the thread-group leader's, which differs when a
/// thread has `unshare`d its own, as the fixture capture does).
fn proc_net(name: &str) -> Input {
    let thread_self = Path::new("/proc/thread-self/net").join(name);
    let path = if Path::new("/proc/thread-self").exists() {
        thread_self
    } else {
        Path::new("/proc/net").join(name)
    };
    match fs::read_to_string(&path) {
        Ok(t) => Input::Text(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Input::Absent(format!("no {}", path.display()))
        }
        Err(e) => Input::Unknown(format!("cannot read {}: {e}", path.display())),
    }
}

fn nonempty_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(str::trim).filter(|l| !l.is_empty())
}

/// Collects the node's state from the calling thread's network namespace.
pub fn collect(options: &CollectOptions, subsystems: Subsystems) -> NodeState {
    let t = options.tool_timeout;
    let proxy_mode = match options.metrics_address {
        None => Input::Unknown("not asked (--metrics-address none)".to_owned()),
        Some(addr) => match proxy_mode::query(addr, options.query_timeout) {
            Ok(mode) => Input::Text(mode.to_string()),
            Err(e) => Input::Absent(format!("GET /proxyMode: {e}")),
        },
    };

    let ip_tables_names = proc_net("ip_tables_names");
    let ip6_tables_names = proc_net("ip6_tables_names");
    let iptables_legacy_save = match &ip_tables_names {
        Input::Text(names) if nonempty_lines(names).next().is_some() => run_tool(
            &[
                ("iptables-legacy-save", &[]),
                ("xtables-legacy-multi", &["iptables-save"]),
            ],
            t,
        ),
        Input::Text(_) => {
            Input::Absent("no legacy tables (/proc/net/ip_tables_names is empty)".to_owned())
        }
        Input::Absent(_) => Input::Absent("ip_tables not loaded: no legacy tables".to_owned()),
        Input::Unknown(why) => Input::Unknown(why.clone()),
    };

    let no_nf_tables =
        || Input::Absent("nf_tables not loaded: no nftables state (not loading it)".to_owned());
    let iptables_nft_save = if subsystems.nf_tables {
        run_tool(
            &[
                ("iptables-nft-save", &[]),
                ("xtables-nft-multi", &["iptables-save"]),
            ],
            t,
        )
    } else {
        no_nf_tables()
    };
    let nft = if subsystems.nf_tables {
        collect_nft(t)
    } else {
        no_nf_tables()
    };

    let ip_vs = match proc_net("ip_vs") {
        Input::Absent(_) => Input::Absent("ip_vs not loaded (no /proc/net/ip_vs)".to_owned()),
        other => other,
    };
    let kube_ipvs0 = collect_kube_ipvs0(t);
    let (ipset_names, ipset_cluster_ip) = if subsystems.ip_set {
        let names = run_tool(&[("ipset", &["list", "-n"])], t);
        let has_cluster_ip_set = names
            .text()
            .is_some_and(|n| nonempty_lines(n).any(|l| l == ipvs::CLUSTER_IP_SET));
        let cluster_ip = if has_cluster_ip_set {
            run_tool(&[("ipset", &["list", "-t", ipvs::CLUSTER_IP_SET])], t)
        } else if names.text().is_some() {
            Input::Absent(format!("no ipset {}", ipvs::CLUSTER_IP_SET))
        } else {
            names.clone()
        };
        (names, cluster_ip)
    } else {
        let absent = Input::Absent("ip_set not loaded: no ipsets (not loading it)".to_owned());
        (absent.clone(), absent)
    };

    NodeState {
        proxy_mode,
        ip_tables_names,
        ip6_tables_names,
        iptables_legacy_save,
        iptables_nft_save,
        nft,
        ip_vs,
        kube_ipvs0,
        ipset_names,
        ipset_cluster_ip,
    }
}

/// `ip -d -j addr show dev kube-ipvs0`, or the plain one-line form where
/// `ip` is busybox's (no JSON, no details).
fn collect_kube_ipvs0(t: Duration) -> Input {
    let dev = ipvs::KUBE_IPVS0;
    let absent = |input: Input| match input {
        // iproute2: `Device "X" does not exist.`; busybox: `can't find device 'X'`.
        Input::Unknown(why)
            if why.contains("does not exist") || why.contains("can't find device") =>
        {
            Input::Absent(format!("no {dev} device"))
        }
        other => other,
    };
    match absent(run_tool(
        &[("ip", &["-d", "-j", "addr", "show", "dev", dev])],
        t,
    )) {
        Input::Unknown(_) => absent(run_tool(&[("ip", &["-o", "addr", "show", "dev", dev])], t)),
        other => other,
    }
}

/// `nft -j list tables`, then per `kube-proxy` table its chains and the
/// two sets that count services: far less than `list ruleset`, which would
/// print every rule of every service.
fn collect_nft(t: Duration) -> Input {
    let tables = match run_tool(&[("nft", &["-j", "list", "tables"])], t) {
        Input::Text(text) => text,
        other => return other,
    };
    let mut out = format!("{}\n", tables.trim_end());
    let mut objects = nftables::NftObjects::default();
    if objects.add_document(&tables).is_err() {
        return Input::Unknown(
            "`nft -j list tables` did not print JSON (nft too old for -j?)".to_owned(),
        );
    }
    for family in objects.kube_proxy_families() {
        let f = family.as_str();
        let t_name = nftables::KUBE_PROXY_TABLE;
        let commands: [&[&str]; 3] = [
            &["-j", "list", "chains", f],
            &["-j", "list", "map", f, t_name, "service-ips"],
            &["-j", "list", "set", f, t_name, "cluster-ips"],
        ];
        for args in commands {
            // A missing set (older kube-proxy) only leaves that count unknown.
            if let Input::Text(doc) = run_tool(&[("nft", args)], t) {
                let _ = writeln!(out, "{}", doc.trim_end());
            }
        }
    }
    Input::Text(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tools_are_unknown_not_errors() {
        let input = run_tool(
            &[("pathcost-no-such-tool", &[]), ("nor-this-one", &["x"])],
            Duration::from_secs(1),
        );
        assert_eq!(
            input,
            Input::Unknown("pathcost-no-such-tool / nor-this-one not installed".into())
        );
    }

    #[test]
    fn failing_and_slow_tools_are_unknown_with_the_reason() {
        let failed = run_tool(
            &[("sh", &["-c", "echo oops >&2; exit 3"])],
            Duration::from_secs(5),
        );
        assert_eq!(
            failed.unknown(),
            Some("`sh -c echo oops >&2; exit 3` failed: oops")
        );
        let slow = run_tool(&[("sleep", &["5"])], Duration::from_millis(50));
        assert!(slow.unknown().unwrap().contains("timed out"), "{slow:?}");
        let ok = run_tool(&[("sh", &["-c", "echo hi"])], Duration::from_secs(5));
        assert_eq!(ok.text(), Some("hi\n"));
    }

    #[test]
    fn states_round_trip_through_a_directory() {
        let dir = std::env::temp_dir().join(format!("pathcost-state-{}", std::process::id()));
        let state = NodeState {
            proxy_mode: Input::Absent("nothing answers".into()),
            ip_tables_names: Input::Text("nat\nfilter\n".into()),
            ip6_tables_names: Input::Text(String::new()),
            iptables_legacy_save: Input::Text("*nat\nCOMMIT\n".into()),
            iptables_nft_save: Input::Unknown("iptables-nft-save not installed".into()),
            nft: Input::Absent("nf_tables not loaded".into()),
            ip_vs: Input::Absent("ip_vs not loaded".into()),
            kube_ipvs0: Input::Absent("no kube-ipvs0 device".into()),
            ipset_names: Input::Text(String::new()),
            ipset_cluster_ip: Input::Absent("no ipset KUBE-CLUSTER-IP".into()),
        };
        state.save_dir(&dir).unwrap();
        // Saving again over an older state replaces its files.
        state.save_dir(&dir).unwrap();
        assert_eq!(NodeState::load_dir(&dir).unwrap(), state);
        fs::remove_dir_all(&dir).unwrap();
    }
}
