//! Shared helpers for pathcost's integration tests: finding the binary,
//! deciding (by probing the kernel, never by version) whether a test can run
//! here or must skip with a printed reason, and running bpftrace, the
//! independent instrument the accuracy tests compare pathcost against.

pub mod serve;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use tracer::capabilities::KernelFeatures;

/// True inside the test VM (`cargo xtask test` sets it in the VM's init).
pub fn in_vm() -> bool {
    std::env::var_os("PATHCOST_IN_VM").is_some()
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Why a kprobe-based test cannot run here, or `None` when it can.
pub fn kprobe_skip_reason() -> Option<String> {
    if !is_root() {
        return Some("needs root".into());
    }
    let k = KernelFeatures::probe();
    if !k.kprobes {
        return Some(format!("kernel {} has no kprobes (runs in the test VM: cargo xtask test)", k.release));
    }
    if !k.btf {
        return Some(format!("kernel {} has no BTF", k.release));
    }
    None
}

/// Names a file every host skip is appended to, one `binary<TAB>test<TAB>why`
/// line each; `cargo xtask test` sets it for the host tests and prints the
/// file as a table, so skips cannot scroll by unseen.
pub const SKIP_LOG_ENV: &str = "PATHCOST_SKIP_LOG";

/// Says why a test cannot run here; the caller then returns.
///
/// On the host it prints `SKIP test: why` (shown with `--nocapture`) and
/// records it in `$PATHCOST_SKIP_LOG`. In the VM it panics instead: the VM
/// is built to have everything the suite needs (kprobes, BTF, IPVS, the
/// tools), so a skip there means the VM or the test is broken, and a green
/// run must not hide it. Tests that can only run on the host live in a
/// `mod host_only`, which the VM suite leaves out (`--skip host_only::`).
pub fn skip(test: &str, why: &str) {
    if in_vm() {
        panic!("{test} would skip in the VM, which must have what it needs: {why}");
    }
    eprintln!("SKIP {test}: {why}");
    if let Some(log) = std::env::var_os(SKIP_LOG_ENV) {
        record_skip(std::path::Path::new(&log), test, why);
    }
}

/// Appends one line to the skip log. Test threads and binaries append
/// concurrently; one `write` of one short line on an `O_APPEND` file does
/// not interleave with theirs.
fn record_skip(log: &std::path::Path, test: &str, why: &str) {
    use std::io::Write as _;
    // target/debug/deps/<binary>-<hash>: the binary is the test file's name.
    let exe = std::env::current_exe().ok();
    let stem = exe.as_deref().and_then(|e| e.file_stem()).map(|s| s.to_string_lossy().into_owned());
    let binary = stem.as_deref().map_or("?", |s| s.rsplit_once('-').map_or(s, |(name, _)| name));
    let field = |s: &str| s.replace(['\t', '\n'], " ");
    let line = format!("{}\t{}\t{}\n", field(binary), field(test), field(why));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        // Losing the record would hide the skip the log exists to show.
        .unwrap_or_else(|e| panic!("cannot record a skip in {} ({SKIP_LOG_ENV}): {e}", log.display()));
}

/// The `pathcost` binary under test: `$PATHCOST_BIN`, `/bin/pathcost` in
/// the VM, else the one cargo built next to this test's target directory.
pub fn pathcost_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PATHCOST_BIN") {
        return p.into();
    }
    if in_vm() {
        return "/bin/pathcost".into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/pathcost
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("pathcost"))
        .expect("test executable lives in target/<profile>/deps");
    assert!(bin.exists(), "{} not built: run `cargo build -p tracer` first", bin.display());
    bin
}

/// The root namespace's netfilter, IPVS, ipset and link state, as the
/// kernel's own tools list it, with counters and comments blanked so only
/// a real change shows. Tools that are missing contribute their error.
pub fn root_network_state() -> String {
    let tools: [&[&str]; 7] = [
        &["iptables-legacy-save"],
        &["iptables-nft-save"],
        &["nft", "list", "ruleset"],
        &["ipvsadm", "-Sn"],
        &["ipset", "list"],
        &["ip", "-o", "link"],
        &["ip", "-o", "addr"],
    ];
    let mut out = String::new();
    for argv in tools {
        out.push_str(&format!("== {}\n", argv.join(" ")));
        match std::process::Command::new(argv[0]).args(&argv[1..]).output() {
            Ok(o) => {
                for line in String::from_utf8_lossy(&o.stdout).lines() {
                    if !line.starts_with('#') {
                        out.push_str(&blank_counters(line));
                        out.push('\n');
                    }
                }
            }
            Err(e) => out.push_str(&format!("unavailable: {e}\n")),
        }
    }
    out
}

/// `[12:3456]` -> `[0:0]`, `packets 5 bytes 300` -> `packets 0 bytes 0`,
/// and link statistics that move with unrelated traffic.
fn blank_counters(line: &str) -> String {
    let mut words: Vec<String> = line.split(' ').map(str::to_owned).collect();
    for i in 0..words.len() {
        let w = &words[i];
        if w.starts_with('[') && w.ends_with(']') && w[1..w.len() - 1].split(':').all(|n| n.parse::<u64>().is_ok()) {
            words[i] = "[0:0]".into();
        }
        if (words[i] == "packets" || words[i] == "bytes") && i + 1 < words.len() && words[i + 1].parse::<u64>().is_ok() {
            words[i + 1] = "0".into();
        }
    }
    words.join(" ")
}

/// Names pathcost's programs get in the kernel (BPF names stop at 15 bytes).
pub fn our_program_names() -> Vec<String> {
    let mut names = Vec::new();
    for site in tracer::probes::SITES.iter().chain([&tracer::probes::CALIBRATION]) {
        for prefix in ["kprobe", "kretprobe", "fentry", "fexit"] {
            let full = format!("{prefix}_{}", site.program_stem);
            names.push(full.chars().take(15).collect());
        }
    }
    // The tracepoint spans' programs: the bracket and the transit.
    names.extend(["bracket_open", "bracket_close", "transit_arrive", "transit_depart"].map(str::to_owned));
    // The floor `pathcost bench` attaches.
    names.extend(
        ["kprobe_floor", "kretprobe_floor", "fentry_floor_nf_hook_slow", "fexit_floor_nf_hook_slow"]
            .map(|n| n.chars().take(15).collect::<String>()),
    );
    names
}

/// pathcost's programs currently loaded, from the kernel's own list.
pub fn loaded_ours() -> Vec<String> {
    let ours = our_program_names();
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| p.name_as_str().map(str::to_owned))
        .filter(|n| ours.contains(n))
        .collect()
}

/// Waits up to 5 s for the kernel to release a killed process's programs
/// (file descriptors are closed asynchronously); returns what is left.
pub fn loaded_ours_after_exit() -> Vec<String> {
    for _ in 0..50 {
        let left = loaded_ours();
        if left.is_empty() {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    loaded_ours()
}

/// Contents of tracefs `kprobe_events` (named kprobes; pathcost makes none).
pub fn kprobe_events() -> String {
    std::fs::read_to_string("/sys/kernel/tracing/kprobe_events")
        .or_else(|_| std::fs::read_to_string("/sys/kernel/debug/tracing/kprobe_events"))
        .unwrap_or_default()
}

/// Why the bpftrace comparisons cannot run here, or `None` when they can.
/// The VM image carries bpftrace (xtask/src/vm/initramfs.rs), so there a
/// bpftrace that does not run is a broken VM and fails the test instead.
pub fn bpftrace_skip_reason() -> Option<String> {
    if !is_root() {
        return Some("needs root".into());
    }
    match Command::new("bpftrace").arg("--version").output() {
        Ok(out) if out.status.success() => None,
        Ok(out) if in_vm() => panic!(
            "bpftrace is in the VM image but does not run: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(err) if in_vm() => panic!("bpftrace is missing from the VM image: {err}"),
        Ok(out) => Some(format!("bpftrace --version failed: {}", String::from_utf8_lossy(&out.stderr))),
        Err(_) => Some("bpftrace is not installed (cargo xtask setup installs it)".into()),
    }
}

/// What bpftrace's `stats()` printed for one map: calls and their mean.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BpftraceStats {
    pub count: u64,
    pub mean_ns: f64,
}

/// A running bpftrace script, attached (see [`tracer::bpftrace::Bpftrace`]);
/// a test fails at once when it cannot start or stop.
pub struct Bpftrace(tracer::bpftrace::Bpftrace);

impl Bpftrace {
    pub fn start(script: &str) -> Bpftrace {
        Bpftrace(tracer::bpftrace::Bpftrace::start(script).unwrap_or_else(|e| panic!("{e:#}")))
    }

    /// Detaches and returns everything bpftrace printed after attaching.
    pub fn stop(self) -> String {
        self.0.stop().unwrap_or_else(|e| panic!("{e:#}"))
    }
}

/// Parses a stats map printed by bpftrace,
/// `@name: count 400, average 5234, total 2093600`.
pub fn bpftrace_stats(output: &str, map: &str) -> Option<BpftraceStats> {
    let prefix = format!("@{map}:");
    let line = output.lines().find(|l| l.starts_with(&prefix))?;
    let field = |name: &str| -> Option<f64> {
        let rest = &line[line.find(name)? + name.len()..];
        rest.trim_start().split(|c: char| c == ',' || c.is_whitespace()).next()?.parse().ok()
    };
    Some(BpftraceStats { count: field("count")? as u64, mean_ns: field("average")? })
}

/// A bpftrace kprobe/kretprobe pair that times calls of `symbol` into the
/// stats map `@map`, written independently of pathcost's programs but on
/// the same principle: a per-CPU stack of frames, because these functions
/// run in softirq on top of whatever the CPU was doing and can nest (the
/// IPVS input hook transmits, and so runs its own LOCAL_OUT hook, inside
/// itself), so a single start time per CPU would be overwritten. `bindings`
/// are statements run at entry (e.g. casting `arg0`) and `filter` an
/// expression over them that selects the calls to record; every call pushes
/// a frame so that exits pair with the right entry. An exit with an empty
/// stack (a call already running at attach time) is ignored.
pub fn bpftrace_timed_calls(map: &str, symbol: &str, bindings: &str, filter: &str) -> String {
    format!(
        r#"
kprobe:{symbol}
{{
  {bindings}
  $d = @{map}_depth[cpu];
  @{map}_depth[cpu] = $d + 1;
  @{map}_want[cpu, $d] = {filter};
  @{map}_start[cpu, $d] = nsecs;
}}
kretprobe:{symbol}
/@{map}_depth[cpu] > 0/
{{
  $end = nsecs;
  $d = @{map}_depth[cpu] - 1;
  @{map}_depth[cpu] = $d;
  if (@{map}_want[cpu, $d]) {{ @{map} = stats($end - @{map}_start[cpu, $d]); }}
  delete(@{map}_start[cpu, $d]);
  delete(@{map}_want[cpu, $d]);
}}
"#
    )
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_owned()
}

/// Every YAML document of every manifest in deploy/kubernetes/, in file
/// order, with its file name (what `kubectl apply -f deploy/kubernetes/`
/// applies).
pub fn manifest_documents() -> Vec<(String, serde_json::Value)> {
    use serde::Deserialize as _;
    let dir = workspace().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = serde_json::Value::deserialize(doc).unwrap_or_else(|e| panic!("{name}: {e}"));
            if !value.is_null() {
                docs.push((name.clone(), value));
            }
        }
    }
    docs
}

/// The DaemonSet's one container, as written.
pub fn daemonset_container() -> serde_json::Value {
    let docs = manifest_documents();
    let (_, ds) = docs.iter().find(|(_, d)| d["kind"] == "DaemonSet").expect("a DaemonSet in deploy/kubernetes/");
    ds["spec"]["template"]["spec"]["containers"][0].clone()
}

/// The capabilities the DaemonSet adds (after dropping ALL), lower-case
/// without `CAP_`, as setpriv(1) and capabilities(7) name them.
pub fn daemonset_capabilities() -> Vec<String> {
    let caps = &daemonset_container()["securityContext"]["capabilities"];
    assert!(
        caps["drop"].as_array().is_some_and(|d| d.iter().any(|c| c == "ALL")),
        "the DaemonSet must drop ALL before adding: {caps}"
    );
    caps["add"]
        .as_array()
        .expect("capabilities.add")
        .iter()
        .map(|c| c.as_str().expect("a capability name").trim_start_matches("CAP_").to_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpftrace_stats_lines_parse() {
        let out = "\n@call_depth[0]: 0\n@call: count 400, average 5234, total 2093600\n";
        assert_eq!(bpftrace_stats(out, "call"), Some(BpftraceStats { count: 400, mean_ns: 5234.0 }));
        assert_eq!(bpftrace_stats(out, "other"), None);
        assert_eq!(bpftrace_stats("nothing", "call"), None);
    }
}
