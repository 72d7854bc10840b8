//! Test support for the generators: putting `iptables-restore` text into the
//! order `iptables-save` prints, and loading texts into a throwaway network
//! namespace (`unshare -n`) so the real tools judge them. Nothing here ever runs a
//! netfilter tool outside a fresh namespace.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Lines of `table` (between `*table` and `COMMIT`) of an iptables-restore/save text.
pub(super) fn table_lines<'a>(text: &'a str, table: &str) -> Vec<&'a str> {
    let header = format!("*{table}");
    text.lines()
        .skip_while(|l| *l != header)
        .skip(1)
        .take_while(|l| *l != "COMMIT")
        .collect()
}

const TABLE_ORDER: [&str; 5] = ["raw", "mangle", "filter", "nat", "security"];

fn builtin_chains(table: &str) -> &'static [&'static str] {
    match table {
        "raw" => &["PREROUTING", "OUTPUT"],
        "mangle" => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
        "filter" => &["INPUT", "FORWARD", "OUTPUT"],
        "nat" => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        "security" => &["INPUT", "FORWARD", "OUTPUT"],
        _ => &[],
    }
}

/// What iptables-save prints for `--probability p`: the kernel keeps
/// `lround(p * 2^31)` and iptables-save prints that fraction with 11 decimals.
fn saved_probability(value: &str) -> String {
    let p: f64 = value.parse().expect("probability is a number");
    let stored = (p * 2_147_483_648.0).round();
    format!("{:.11}", stored / 2_147_483_648.0)
}

fn normalise_rule(rule: &str) -> String {
    match rule.split_once("--probability ") {
        Some((head, tail)) => {
            let (value, rest) = tail.split_once(' ').unwrap_or((tail, ""));
            let sep = if rest.is_empty() { "" } else { " " };
            format!(
                "{head}--probability {}{sep}{rest}",
                saved_probability(value)
            )
        }
        None => rule.to_owned(),
    }
}

/// Puts an iptables-restore or iptables-save text into iptables-save's canonical
/// order: tables in kernel order, built-in chains (with their policy, ACCEPT if not
/// given) then user chains sorted by name, rules grouped per chain in that order,
/// probabilities as saved, `#` lines dropped. With `sort_services` the service rules
/// of nat KUBE-SERVICES are sorted (the NodePort rule stays last), as upstream tests
/// do to hide Go's map order
/// (docs/kube-proxy-rules.md#iptables-service-order).
pub(super) fn save_order(text: &str, sort_services: bool) -> String {
    struct Table {
        policies: BTreeMap<String, String>,
        user_chains: Vec<String>,
        rules: BTreeMap<String, Vec<String>>,
    }
    let mut tables: BTreeMap<usize, (String, Table)> = BTreeMap::new();
    let mut current: Option<usize> = None;
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            let rank = TABLE_ORDER
                .iter()
                .position(|t| *t == name)
                .expect("known table");
            tables.entry(rank).or_insert_with(|| {
                (
                    name.to_owned(),
                    Table {
                        policies: BTreeMap::new(),
                        user_chains: Vec::new(),
                        rules: BTreeMap::new(),
                    },
                )
            });
            current = Some(rank);
            continue;
        }
        if line == "COMMIT" {
            current = None;
            continue;
        }
        let (name, table) = &mut tables
            .get_mut(&current.expect("line outside a table"))
            .expect("table exists");
        if let Some(decl) = line.strip_prefix(':') {
            let mut parts = decl.split(' ');
            let chain = parts.next().expect("chain name").to_owned();
            let policy = parts.next().unwrap_or("-").to_owned();
            if builtin_chains(name).contains(&chain.as_str()) {
                table.policies.insert(chain, policy);
            } else if !table.user_chains.contains(&chain) {
                table.user_chains.push(chain);
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let chain = rule.split(' ').next().expect("chain").to_owned();
            table
                .rules
                .entry(chain)
                .or_default()
                .push(normalise_rule(line));
        } else {
            panic!("unexpected line in iptables text: {line}");
        }
    }

    let mut out = String::new();
    for (name, mut table) in tables.into_values() {
        out.push_str(&format!("*{name}\n"));
        for chain in builtin_chains(&name) {
            let policy = table.policies.get(*chain).map_or("ACCEPT", String::as_str);
            out.push_str(&format!(":{chain} {policy} [0:0]\n"));
        }
        table.user_chains.sort();
        for chain in &table.user_chains {
            out.push_str(&format!(":{chain} - [0:0]\n"));
        }
        if sort_services && name == "nat" {
            if let Some(rules) = table.rules.get_mut("KUBE-SERVICES") {
                // Sort only the per-service rules (they carry "cluster IP").
                let mut services: Vec<String> = rules
                    .iter()
                    .filter(|r| r.contains(" cluster IP\""))
                    .cloned()
                    .collect();
                services.sort();
                let mut sorted = services.into_iter();
                for rule in rules.iter_mut() {
                    if rule.contains(" cluster IP\"") {
                        *rule = sorted.next().expect("same count");
                    }
                }
            }
        }
        let chain_order = builtin_chains(&name)
            .iter()
            .map(|c| c.to_string())
            .chain(table.user_chains.iter().cloned());
        for chain in chain_order {
            for rule in table.rules.get(&chain).into_iter().flatten() {
                out.push_str(rule);
                out.push('\n');
            }
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// What a command run by [`run_in_fresh_netns`] printed.
pub(super) struct NetnsRun {
    pub stdout: String,
    pub stderr: String,
}

const SBIN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn find_tool(tool: &str) -> bool {
    SBIN_PATH
        .split(':')
        .any(|dir| Path::new(dir).join(tool).is_file())
}

/// Runs `script` with `sh -c` inside a new, empty network namespace (`unshare -n`),
/// in a scratch directory holding `inputs` as files (name, content), so the script
/// can say `iptables-restore rules`. Returns `None`, after printing why, when the
/// test cannot run here: not root, a tool in `tools` (or `unshare`) missing, or
/// namespaces not permitted. Panics with the script and its stderr if it fails.
pub(super) fn run_in_fresh_netns(
    tools: &[&str],
    script: &str,
    inputs: &[(&str, &str)],
) -> Option<NetnsRun> {
    if effective_uid() != Some(0) {
        eprintln!("skipping: loading rules needs root to create a network namespace");
        return None;
    }
    for tool in tools.iter().copied().chain(["unshare", "sh"]) {
        if !find_tool(tool) {
            eprintln!("skipping: {tool} is not installed");
            return None;
        }
    }
    let dir = ScratchDir::new();
    for (name, content) in inputs {
        std::fs::write(dir.0.join(name), content).expect("write test input");
    }
    let output = Command::new("unshare")
        .args(["--net", "--", "sh", "-c", script])
        .current_dir(&dir.0)
        .env("PATH", SBIN_PATH)
        .stdin(Stdio::null())
        .output()
        .expect("spawn unshare");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        if stderr.contains("unshare failed") && stderr.contains("Operation not permitted") {
            eprintln!("skipping: network namespaces are not permitted here: {stderr}");
            return None;
        }
        panic!(
            "`unshare --net sh -c '{script}'` failed with {}\n--- stderr ---\n{stderr}--- end ---",
            output.status
        );
    }
    Some(NetnsRun { stdout, stderr })
}

/// A per-test directory under the system temp dir, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "pathcost-synthesis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create scratch dir");
        ScratchDir(path)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
