//! The foundation's smoke test: pathcost's loader attaches a kprobe and a
//! kretprobe to `nf_hook_slow`, real packets cross an iptables rule in a
//! private network namespace, and every packet the rule counted must show
//! up as a matched entry/exit pair. Runs in the test VM; on kernels without
//! kprobes it says why it skips.

use pathcost_tests::{kprobe_skip_reason, skip};
use tracer::probes::{Backend, Mechanism};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kprobe_pairs_on_nf_hook_slow_cover_every_packet() {
    if let Some(why) = kprobe_skip_reason() {
        return skip("kprobe_pairs_on_nf_hook_slow_cover_every_packet", &why);
    }
    let outcome = tracer::selftest::run(Backend::Kprobe, 300, "iptables-legacy")
        .await
        .expect("selftest runs");
    eprintln!(
        "sent {}, rule counted {}, nf_hook_slow pairs {}",
        outcome.packets_sent, outcome.rule_packets, outcome.nf_hook_slow_pairs
    );
    let site = outcome
        .report
        .sites
        .iter()
        .find(|s| s.site == "nf_hook_slow")
        .expect("nf_hook_slow in the report");
    assert_eq!(site.mechanism, Some(Mechanism::Kprobe), "{site:?}");
    assert_eq!(outcome.packets_sent, 300);
    assert!(outcome.rule_packets >= 300, "rule counted {}", outcome.rule_packets);
    assert!(outcome.nf_hook_slow_pairs > 0);
    assert!(
        outcome.nf_hook_slow_pairs >= outcome.rule_packets,
        "{} pairs < {} packets",
        outcome.nf_hook_slow_pairs,
        outcome.rule_packets
    );
    assert_eq!(outcome.report.losses.unmatched_exits, 0);
    // The per-call rows carry attribution: nf_hook_slow at LOCAL_OUT, and
    // ipt_do_table for the filter and nat tables we programmed.
    let has = |site: &str, hook: &str, table: &str| {
        outcome.report.rows.iter().any(|r| r.site == site && r.hook == hook && r.table == table)
    };
    assert!(has("nf_hook_slow", "LOCAL_OUT", ""), "{:#?}", outcome.report.rows);
    assert!(has("ipt_do_table", "LOCAL_OUT", "filter"), "{:#?}", outcome.report.rows);
    assert!(has("ipt_do_table", "LOCAL_OUT", "nat"), "{:#?}", outcome.report.rows);
    outcome.check().expect("selftest criterion");
}
