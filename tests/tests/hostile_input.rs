//! User mistakes caught before any work starts, each as one clear line and
//! a non-zero exit: a `--netns` that is not a network namespace, an
//! `--output` that cannot be written, a `--listen` port that is taken. And
//! signals: SIGINT or SIGTERM during `trace` still writes the report;
//! during `sweep` the results so far are left valid and marked
//! interrupted, the node untouched, and the exit non-zero.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use pathcost_tests::{pathcost_bin, root_network_state, skip};

/// Runs pathcost to completion: (exit code, stderr).
fn pathcost(args: &[&str]) -> (i32, String) {
    let out = Command::new(pathcost_bin()).args(args).output().expect("run pathcost");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "pathcost panicked: {stderr}");
    (out.status.code().unwrap_or(-1), stderr)
}

/// A fresh directory for one test's files.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pathcost-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The run failed at once with exactly one `pathcost:` line containing
/// `expect`, and attached nothing (no "site -> mechanism" line).
fn assert_refused_up_front(args: &[&str], expect: &str) {
    let started = Instant::now();
    let (code, stderr) = pathcost(args);
    assert_eq!(code, 1, "{args:?}: {stderr}");
    assert!(stderr.contains(expect), "{args:?}: expected '{expect}' in: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
    assert!(stderr.starts_with("pathcost: "), "{args:?}: {stderr}");
    assert!(!stderr.contains(" -> "), "{args:?}: refused only after attaching: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(10), "{args:?}: took {:?}", started.elapsed());
}

#[test]
fn netns_that_is_not_a_network_namespace_is_named_for_what_it_is() {
    let dir = scratch("netns");
    let plain = dir.join("not-a-namespace");
    std::fs::write(&plain, "").unwrap();
    let plain = plain.to_str().unwrap();
    let dir_s = dir.to_str().unwrap();
    for (netns, expect) in [
        (plain, "is a regular file, not a network namespace"),
        (dir_s, "is a directory, not a network namespace"),
        ("/proc/self/ns/mnt", "is a mount namespace, not a network namespace"),
        ("/proc/self/ns/uts", "is a UTS namespace, not a network namespace"),
    ] {
        for command in ["trace", "serve"] {
            assert_refused_up_front(&[command, "--backend", "bracket", "--netns", netns], expect);
        }
    }
    assert_refused_up_front(&["trace", "--netns", "/nonexistent/ns"], "cannot open network namespace /nonexistent/ns");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn output_that_cannot_be_written_is_refused_before_measuring() {
    let dir = scratch("output");
    let file = dir.join("a-file");
    std::fs::write(&file, "").unwrap();
    let under_file = file.join("report.json");
    let under_file = under_file.to_str().unwrap();
    let dir_s = dir.to_str().unwrap();
    // --duration 1h: were the check left to the end, this would not return.
    for args in [
        &["trace", "--backend", "bracket", "--duration", "1h", "--output", under_file][..],
        &["trace", "--backend", "bracket", "--duration", "1h", "--export", &format!("md={under_file}")][..],
    ] {
        assert_refused_up_front(args, "is not a directory");
    }
    assert_refused_up_front(&["trace", "--backend", "bracket", "--duration", "1h", "--output", dir_s], "is a directory");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `report`, `detect`, `rules` and `bench` check `--output` (and report's
/// `--export`s) before their work, with the check's own words ("cannot be
/// written: ... is not a directory"); left to the write at the end, the
/// error would read "failed to create ..." after the work was done.
#[test]
fn report_detect_rules_and_bench_check_their_output_up_front() {
    let dir = scratch("output-commands");
    let file = dir.join("a-file");
    std::fs::write(&file, "").unwrap();
    let under_file = file.join("out.json");
    let under_file = under_file.to_str().unwrap();
    let expect = "cannot be written: ";

    // report writes its outputs one by one: the main one must not be
    // written when an --export after it is bad.
    let results = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tracer/tests/fixtures/small.json");
    let first = dir.join("report.md");
    assert_refused_up_front(
        &["report", results.to_str().unwrap(), "--format", "md", "--output", first.to_str().unwrap(), "--export", &format!("csv={under_file}")],
        expect,
    );
    assert!(!first.exists(), "report wrote its first output before finding the bad --export");
    assert_refused_up_front(&["report", results.to_str().unwrap(), "--output", under_file], expect);

    // detect asks kube-proxy's /proxyMode first thing: a listener standing
    // in for kube-proxy must not be asked.
    let kube_proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    kube_proxy.set_nonblocking(true).unwrap();
    let address = kube_proxy.local_addr().unwrap().to_string();
    assert_refused_up_front(&["detect", "--format", "json", "--metrics-address", &address, "--output", under_file], expect);
    assert!(
        matches!(kube_proxy.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "detect ran (asked kube-proxy) before refusing its --output"
    );

    assert_refused_up_front(&["rules", "--mode", "nftables", "--services", "10", "--output", under_file], expect);
    // Before the privilege check too, so this holds with or without root;
    // with root, a late check would first run the whole bench.
    assert_refused_up_front(
        &["bench", "--backend", "bracket", "--services", "1", "--packets", "10", "--output", under_file],
        expect,
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn listen_on_a_busy_port_is_one_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    assert_refused_up_front(
        &["serve", "--backend", "bracket", "--listen", &addr, "--kube-proxy-address", "none"],
        &format!("cannot listen on {addr}: "),
    );
    let (_, stderr) = pathcost(&["serve", "--backend", "bracket", "--listen", &addr, "--kube-proxy-address", "none"]);
    assert!(stderr.contains("the port is taken"), "{stderr}");
}

/// Starts pathcost with stderr piped and waits until a stderr line
/// satisfies `ready`; returns the child and the stderr seen so far, and a
/// thread that collects the rest.
fn start_until(args: &[&str], ready: impl Fn(&str) -> bool) -> (Child, String, std::thread::JoinHandle<String>) {
    let mut child = Command::new(pathcost_bin())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pathcost");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if ready(&line) {
            let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>().join("\n"));
            return (child, seen, rest);
        }
    }
    // Its stderr closed: it has exited, or is about to; reap it.
    let status = child.wait();
    panic!("pathcost ended before it was ready ({status:?}): {seen}");
}

fn send(child: &Child, signal: libc::c_int) {
    // SAFETY: kill on our own child's pid; no memory is involved.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
}

/// Waits for `child` to exit, at most `limit`.
fn wait_at_most(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("pathcost did not exit within {limit:?} of the signal");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Needs root and the bracket's tracepoints: the build host has both, and
/// the VM suite leaves these out for time (a sweep there takes minutes).
mod host_only {
    use super::*;

    fn bracket_skip_reason() -> Option<String> {
        if !pathcost_tests::is_root() {
            return Some("needs root".into());
        }
        tracer::capabilities::bracket_unavailable_reason()
    }

    fn trace_signal_writes_the_report(test: &str, signal: libc::c_int) {
        if let Some(why) = bracket_skip_reason() {
            return skip(test, &why);
        }
        let dir = scratch(test);
        let out = dir.join("trace.json");
        let (mut child, _, rest) = start_until(
            &["trace", "--backend", "bracket", "--no-calibrate", "--interval", "0", "--format", "json", "--output", out.to_str().unwrap()],
            |l| l.contains("prerouting_bracket -> "),
        );
        std::thread::sleep(Duration::from_millis(500));
        send(&child, signal);
        let status = wait_at_most(&mut child, Duration::from_secs(30));
        let stderr = rest.join().unwrap();
        assert!(status.success(), "{test}: {status}: {stderr}");
        let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert!(report["rows"].is_array() && report["losses"].is_object(), "{report}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sigterm_during_trace_writes_the_report() {
        trace_signal_writes_the_report("sigterm_during_trace_writes_the_report", libc::SIGTERM);
    }

    #[test]
    fn sigint_during_trace_writes_the_report() {
        trace_signal_writes_the_report("sigint_during_trace_writes_the_report", libc::SIGINT);
    }

    #[test]
    fn sigint_during_sweep_leaves_valid_results_marked_interrupted() {
        const TEST: &str = "sigint_during_sweep_leaves_valid_results_marked_interrupted";
        if let Some(why) = bracket_skip_reason().or_else(|| {
            tracer::synthesis::program::Mode::IptablesLegacy.unavailable_reason(Default::default())
        }) {
            return skip(TEST, &why);
        }
        let dir = scratch("sweep-sigint");
        let before = root_network_state();
        // The third point is large enough to still be running at the signal.
        let (mut child, seen, rest) = start_until(
            &[
                "sweep", "--backend", "bracket", "--modes", "iptables-legacy", "--services", "1,2,5000",
                "--protocols", "udp", "--connections", "200", "--miss", "10", "--established-flows", "2",
                "--output", dir.to_str().unwrap(),
            ],
            |l| l.contains("[3/3]"),
        );
        send(&child, libc::SIGINT);
        let status = wait_at_most(&mut child, Duration::from_secs(120));
        let stderr = seen + &rest.join().unwrap();
        assert_eq!(status.code(), Some(1), "{stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with("pathcost: interrupted by SIGINT after 2 completed points"), "{stderr}");
        let results = tracer::results::Results::load(&dir.join("results.json")).expect("valid results");
        assert!(results.interrupted, "marked interrupted");
        assert_eq!(results.points.len(), 2, "the points finished before the signal");
        assert_eq!(root_network_state(), before, "the root namespace changed");
        // The file is usable as it is, and says what it is.
        let (code, stderr) = pathcost(&["report", dir.join("results.json").to_str().unwrap(), "--output", "/dev/null"]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stderr.contains("the sweep was interrupted after 2 points"), "{stderr}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// As a user who forgot sudo: one line that says what is needed.
    #[test]
    fn unprivileged_trace_and_sweep_fail_with_one_clear_line() {
        const TEST: &str = "unprivileged_trace_and_sweep_fail_with_one_clear_line";
        if !pathcost_tests::is_root() || Command::new("setpriv").arg("--version").output().is_err() {
            return skip(TEST, "needs root and setpriv to drop to nobody");
        }
        for args in [&["trace", "--duration", "1s"][..], &["sweep", "--modes", "iptables-legacy", "--services", "1"][..]] {
            let out = Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(pathcost_bin())
                .args(args)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
            assert!(stderr.starts_with("pathcost: needs root (or CAP_BPF and CAP_PERFMON)"), "{args:?}: {stderr}");
        }
    }

    #[test]
    fn netns_of_this_process_is_accepted() {
        const TEST: &str = "netns_of_this_process_is_accepted";
        if let Some(why) = bracket_skip_reason() {
            return skip(TEST, &why);
        }
        let (code, stderr) =
            pathcost(&["trace", "--backend", "bracket", "--no-calibrate", "--duration", "1s", "--interval", "0", "--netns", "/proc/self/ns/net"]);
        assert_eq!(code, 0, "{stderr}");
    }
}
