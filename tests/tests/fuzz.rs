//! Property-based fuzzing (proptest, on the stable toolchain) of every
//! parser that reads input pathcost does not control: HTTP request heads
//! from the network (`serve`), results files, the node's state as
//! iptables-save, nft JSON, /proc/net/ip_vs, `ip -j addr`, ipset and
//! kallsyms print it, the kernel's netlink answers, and BTF.
//!
//! Each target mutates real seeds (the detection fixtures, netlink answers
//! recorded from a kernel, a results file,
//! a synthetic BTF with every kind) and adds free-form input, and must
//! never panic; where a parse succeeds, what is built on it (analysis,
//! look-ups) must not panic either. Each target runs for
//! `$PATHCOST_FUZZ_SECONDS` (default 1; at least one batch of 256 inputs;
//! `cargo xtask test` runs them as a step of their own, 10 s each) and
//! prints its executions. A failure prints proptest's shrunk input: add it
//! to `regressions` below as a test of its own.

use std::{
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use proptest::{
    prelude::*,
    test_runner::{Config, RngAlgorithm, TestRng, TestRunner},
};

/// Runs `check` on inputs from `strategy` until the time budget is spent;
/// panics with the shrunk input on the first failure.
fn fuzz<S: Strategy>(target: &str, strategy: S, check: impl Fn(S::Value)) {
    let budget = std::env::var("PATHCOST_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs_f64);
    // A fresh runner per batch (a runner stops after `cases` successes),
    // each seeded from the run's seed and the batch number: the seed is
    // printed, and `PATHCOST_FUZZ_SEED` replays a run.
    let run_seed = std::env::var("PATHCOST_FUZZ_SEED").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
    });
    let executions = AtomicU64::new(0);
    let started = Instant::now();
    let mut batch = 0u64;
    // At least one batch, so a budget of 0 still checks every target once.
    loop {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&run_seed.to_le_bytes());
        key[8..16].copy_from_slice(&batch.to_le_bytes());
        batch += 1;
        // No failure persistence: a failure becomes a regression test by
        // hand, where a reader can see it.
        let config = Config { cases: 256, failure_persistence: None, ..Config::default() };
        let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &key));
        let outcome = runner.run(&strategy, |input| {
            executions.fetch_add(1, Ordering::Relaxed);
            check(input);
            Ok(())
        });
        if let Err(e) = outcome {
            panic!("fuzz {target} (PATHCOST_FUZZ_SEED={run_seed}): {e}");
        }
        if started.elapsed() >= budget {
            break;
        }
    }
    // One line per target; `cargo xtask test` shows it (--nocapture).
    println!(
        "fuzz {target}: {} executions in {:.1} s, 0 crashes (PATHCOST_FUZZ_SEED={run_seed})",
        executions.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
}

fn seed(path: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("fuzz seed {}: {e}", p.display()))
}

/// One edit of a byte string: where (a fraction of its length), what.
#[derive(Clone, Debug)]
enum Edit {
    Flip(f64, u8),
    Insert(f64, Vec<u8>),
    Delete(f64, usize),
    Duplicate(f64, usize),
    Truncate(f64),
}

fn edit() -> impl Strategy<Value = Edit> {
    let at = 0.0..1.0f64;
    // Bytes that matter to these formats more often than chance would pick them.
    let interesting = prop::sample::select(b"\r\n\t :,[]{}\"-*#0/\\\xff\x00".to_vec());
    let byte = prop_oneof![any::<u8>(), interesting];
    prop_oneof![
        (at.clone(), byte.clone()).prop_map(|(a, b)| Edit::Flip(a, b)),
        (at.clone(), prop::collection::vec(byte, 1..16)).prop_map(|(a, b)| Edit::Insert(a, b)),
        (at.clone(), 1..64usize).prop_map(|(a, n)| Edit::Delete(a, n)),
        (at.clone(), 1..256usize).prop_map(|(a, n)| Edit::Duplicate(a, n)),
        at.prop_map(Edit::Truncate),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    let pos = |a: f64, len: usize| ((a * len as f64) as usize).min(len);
    for e in edits {
        let len = bytes.len();
        match e {
            Edit::Flip(a, b) if len > 0 => {
                let i = pos(*a, len - 1);
                bytes[i] = *b;
            }
            Edit::Flip(..) => {}
            Edit::Insert(a, b) => {
                let i = pos(*a, len);
                bytes.splice(i..i, b.iter().copied());
            }
            Edit::Delete(a, n) => {
                let i = pos(*a, len);
                bytes.drain(i..(i + n).min(len));
            }
            Edit::Duplicate(a, n) => {
                let i = pos(*a, len);
                let chunk = bytes[i..(i + n).min(len)].to_vec();
                bytes.splice(i..i, chunk);
            }
            Edit::Truncate(a) => bytes.truncate(pos(*a, len)),
        }
    }
    bytes
}

/// Seeds, each mutated by a few edits, or free-form bytes.
fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let edited = (prop::sample::select(seeds), prop::collection::vec(edit(), 0..8))
        .prop_map(|(seed, edits)| apply(seed, &edits));
    prop_oneof![4 => edited, 1 => prop::collection::vec(any::<u8>(), 0..512)]
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const MODES: [&str; 6] = ["iptables-legacy", "iptables-nft", "ipvs", "nftables", "nftables-legacy-leftovers", "plain"];

fn detection_seeds(file: &str) -> Vec<Vec<u8>> {
    MODES
        .iter()
        .map(|m| format!("tracer/src/detection/fixtures/{m}/{file}"))
        .filter(|p| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p).exists())
        .map(|p| seed(&p))
        .collect()
}

#[test]
fn http_request_head() {
    use tracer::metrics::http::parse_request;
    let seeds = vec![
        b"GET /metrics HTTP/1.1\r\nHost: node:9470\r\nAccept: application/openmetrics-text;version=1.0.0\r\n".to_vec(),
        b"GET /healthz?x=1 HTTP/1.0\r\n".to_vec(),
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\naccept :text/plain\r\n".to_vec(),
    ];
    let structured = "[A-Z]{0,8} [ -~]{0,40} HTTP/1\\.[0-9](\r\n[ -~:]{0,40}){0,4}".prop_map(String::into_bytes);
    fuzz("http_request_head", prop_oneof![mutated(seeds), structured], |bytes| {
        let head = text(&bytes);
        if let Some(r) = parse_request(&head) {
            assert!(!r.path.contains('?'), "query left in {r:?}");
            assert!(!r.method.contains(' '), "{r:?}");
        }
    });
}

#[test]
fn results_file() {
    use tracer::{analysis::analyze, results::Results};
    let seeds = vec![seed("tracer/tests/fixtures/small.json")];
    fuzz("results_file", mutated(seeds), |bytes| {
        if let Ok(results) = Results::parse(&text(&bytes), "fuzz.json") {
            // Whatever reads, analyses: odd numbers must give warnings, not panics.
            let _ = analyze(&results);
        }
    });
}

#[test]
fn iptables_save() {
    use tracer::detection::iptables::IptablesDump;
    let mut seeds = detection_seeds("iptables-legacy-save");
    seeds.extend(detection_seeds("iptables-nft-save"));
    fuzz("iptables_save", mutated(seeds), |bytes| {
        let dump = IptablesDump::parse(&text(&bytes));
        let kube = dump.kube();
        let _ = (kube.has_kube_proxy_state(), kube.has_iptables_mode_chains(), kube.has_kubelet_marker());
    });
}

#[test]
fn nft_json() {
    use tracer::detection::nftables::NftObjects;
    fuzz("nft_json", mutated(detection_seeds("nft.jsonl")), |bytes| {
        if let Ok(objects) = NftObjects::parse_lines(&text(&bytes)) {
            for family in objects.kube_proxy_families() {
                let _ = objects.kube_proxy_table(&family);
            }
        }
    });
}

#[test]
fn ipvs_and_ipset() {
    use tracer::detection::ipvs;
    let mut seeds = detection_seeds("ip_vs");
    seeds.extend(detection_seeds("kube-ipvs0.json"));
    seeds.extend(detection_seeds("ipset-list-n"));
    seeds.extend(detection_seeds("ipset-list-t-KUBE-CLUSTER-IP"));
    fuzz("ipvs_and_ipset", mutated(seeds), |bytes| {
        let t = text(&bytes);
        let _ = ipvs::parse_proc_ip_vs(&t);
        let _ = ipvs::parse_kube_ipvs0(&t);
        let _ = ipvs::parse_kube_ipset_names(&t);
        let _ = ipvs::parse_ipset_entries(&t);
    });
}

#[test]
fn netlink_answers() {
    use tracer::detection::netlink::message;
    let seeds = ["nft-tables.bin", "nft-chains.bin", "nft-setelems.bin", "rtnl-links.bin"]
        .iter()
        .map(|f| seed(&format!("tracer/src/detection/netlink/fixtures/{f}")))
        .collect();
    fuzz("netlink_answers", mutated(seeds), |bytes| {
        // Every reader over every message: an answer reads or is an error.
        let _ = message::read_all(&bytes);
        if let Ok(ms) = message::messages(&bytes) {
            for m in ms {
                assert!(m.payload.len() <= bytes.len(), "{m:?}");
            }
        }
    });
}

#[test]
fn kallsyms() {
    use tracer::capabilities::Kallsyms;
    let seeds = vec![
        b"ffffffff81000000 T _stext\nffffffffc0a01000 t ipt_do_table\t[ip_tables]\n0000000000000000 T nf_hook_slow\n".to_vec(),
        b"ffffffffc0b00000 t nft_do_chain [nf_tables]\nffffffff8100 D __traceiter_fib_table_lookup\n".to_vec(),
    ];
    let wanted = ["nf_hook_slow", "ipt_do_table", "nft_do_chain", "__traceiter_fib_table_lookup"];
    fuzz("kallsyms", mutated(seeds), |bytes| {
        let t = text(&bytes);
        let k = Kallsyms::parse(&t, &wanted);
        for w in wanted {
            // A function is a symbol: what attach finds, detect finds.
            assert!(k.home(w).is_none() || k.has(w), "{w}");
        }
    });
}

#[test]
fn btf() {
    use tracer::capabilities::btf::Btf;
    let seeds = vec![seed("tracer/tests/fixtures/synthetic.btf")];
    fuzz("btf", mutated(seeds), |bytes| {
        if let Ok(btf) = Btf::from_bytes(&bytes) {
            // The look-ups the probes' layouts are made of.
            let _ = btf.struct_size("packet_state");
            let _ = btf.member_offset("packet_state", "hook");
            let _ = btf.member_info("cyclic", "bad");
            let _ = btf.func_params("after_all_kinds");
            let _ = btf.func_param_index("printk_like", "fmt");
        }
    });
}

/// Inputs a fuzz target once failed on, kept as plain tests.
mod regressions {}
