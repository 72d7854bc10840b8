//! The exposition from made-up calls and a made-up kernel: names, labels,
//! bucket counts and sums, without root.

use std::{collections::BTreeMap, sync::Arc};

use tracer_ebpf::{SiteId, HIST_BUCKETS};

use super::*;
use crate::collection::calibration::SelfCost;

struct FakeKernel;

impl KernelCounters for FakeKernel {
    fn losses(&self) -> anyhow::Result<Losses> {
        Ok(Losses { entries: 10, matched: 9, unmatched_exits: 1, ring_reserve_failures: 3, ..Losses::default() })
    }

    fn histograms(&self) -> anyhow::Result<Vec<KernelHistogram>> {
        let mut buckets = vec![0; HIST_BUCKETS];
        buckets[3] = 1; // 8..16 ns: below the first bound
        buckets[10] = 2; // 1024..2048 ns
        buckets[39] = 1; // the kernel's catch-all
        Ok(vec![
            KernelHistogram {
                site: SiteId::IptDoTable,
                hook: Some(0),
                count: 4,
                sum_ns: 5000,
                self_sum_ns: 4000,
                max_ns: 3000,
                buckets,
            },
            KernelHistogram {
                site: SiteId::Calibration,
                hook: None,
                count: 7,
                sum_ns: 1,
                self_sum_ns: 1,
                max_ns: 1,
                buckets: vec![0; HIST_BUCKETS],
            },
        ])
    }
}

fn status(site: &'static str, mechanism: Option<Mechanism>) -> SiteStatus {
    SiteStatus { site, symbol: mechanism.map(|_| site.to_owned()), module: None, mechanism, notes: Vec::new() }
}

fn call(site: SiteId, hook: u8, name: &str, table: &str, skb: u64, start: u64, dur: u64) -> Call {
    Call { netns: 42, skb, name: name.into(), table: table.into(), ..Call::sample(site, hook, start, dur) }
}

fn metrics(netns: Option<u32>) -> CostMetrics {
    let sites = vec![
        status("nf_hook_slow", Some(Mechanism::Fentry)),
        status("ipt_do_table", Some(Mechanism::Kprobe)),
        status("nft_do_chain", Some(Mechanism::Kprobe)),
        status("ip_vs_in", None),
    ];
    let costs = vec![SelfCost {
        mechanism: "kprobe".into(),
        target: "__task_pid_nr_ns".into(),
        pair_ns: 120.0,
        span_ns: 50.0,
        calls: 1000,
    }];
    let corrections =
        Corrections::new(costs, &[(SiteId::IptDoTable, Mechanism::Kprobe), (SiteId::NftDoChain, Mechanism::Kprobe)]);
    let run = ProbeRun { kernel: "6.1.0-test".into(), sites, corrections, netns, aggregating: false };
    CostMetrics::new(run, Box::new(FakeKernel), Arc::new(node::NodeSlot::default()))
}

/// Samples of a Prometheus text exposition: (name, labels) -> value.
fn parse(text: &str) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').unwrap()),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once("=\"").unwrap();
                (k.to_owned(), v.trim_end_matches('"').to_owned())
            })
            .collect();
        let value = if value == "+Inf" { f64::INFINITY } else { value.parse().unwrap() };
        assert!(out.insert((name.to_owned(), labels), value).is_none(), "duplicate series {line}");
    }
    out
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn calls_land_in_histograms_by_site_hook_table_and_chain() {
    let m = metrics(None);
    m.record(&call(SiteId::IptDoTable, 0, "nat", "", 0, 1, 150));
    m.record(&call(SiteId::IptDoTable, 0, "nat", "", 0, 1, 3000));
    m.record(&call(SiteId::NftDoChain, 0, "nat-prerouting", "kube-proxy", 0, 1, 700));
    m.record(&call(SiteId::Calibration, 0, "", "", 0, 1, 10));
    let text = m.encode(Exposition::Prometheus);
    let s = parse(&text);
    let ipt =
        [("site", "ipt_do_table"), ("hook", "PRE_ROUTING"), ("table", "nat"), ("chain", ""), ("mechanism", "kprobe")];
    assert_eq!(s[&("pathcost_call_duration_seconds_count".into(), labels(&ipt))], 2.0);
    let sum = s[&("pathcost_call_duration_seconds_sum".into(), labels(&ipt))];
    assert!((sum - 3150e-9).abs() < 1e-12, "{sum}");
    let bucket = |le: &str| {
        let mut l = ipt.to_vec();
        l.push(("le", le));
        s[&("pathcost_call_duration_seconds_bucket".into(), labels(&l))]
    };
    assert_eq!(bucket("1e-07"), 0.0);
    assert_eq!(bucket("2e-07"), 1.0);
    assert_eq!(bucket("3.2e-06"), 2.0);
    assert_eq!(bucket("+Inf"), 2.0);
    // Corrected: the kprobe span (50 ns) comes off every call.
    let corrected = s[&("pathcost_call_corrected_duration_seconds_sum".into(), labels(&ipt))];
    assert!((corrected - 3050e-9).abs() < 1e-12, "{corrected}");
    let nft = [
        ("site", "nft_do_chain"),
        ("hook", "PRE_ROUTING"),
        ("table", "kube-proxy"),
        ("chain", "nat-prerouting"),
        ("mechanism", "kprobe"),
    ];
    assert_eq!(s[&("pathcost_call_self_duration_seconds_count".into(), labels(&nft))], 1.0);
    // The calibration target is never a row.
    assert!(!text.contains("calibration"), "{text}");
}

#[test]
fn kernel_histograms_losses_probes_and_self_cost_are_read_at_scrape_time() {
    let m = metrics(None);
    m.set_undecodable(2);
    let s = parse(&m.encode(Exposition::Prometheus));
    let site = [("site", "ipt_do_table"), ("hook", "PRE_ROUTING"), ("mechanism", "kprobe")];
    assert_eq!(s[&("pathcost_kernel_call_duration_seconds_count".into(), labels(&site))], 4.0);
    let bucket = |le: &str| {
        let mut l = site.to_vec();
        l.push(("le", le));
        s[&("pathcost_kernel_call_duration_seconds_bucket".into(), labels(&l))]
    };
    assert_eq!(bucket("1.28e-07"), 1.0);
    assert_eq!(bucket("2.048e-06"), 3.0);
    assert_eq!(bucket("0.067108864"), 3.0);
    assert_eq!(bucket("+Inf"), 4.0);
    assert_eq!(s[&("pathcost_kernel_call_self_seconds_total".into(), labels(&site))], 4e-6);
    assert_eq!(s[&("pathcost_kernel_call_max_seconds".into(), labels(&site))], 3e-6);
    for (reason, v) in [
        ("ring_reserve_failures", 3.0),
        ("unmatched_exits", 1.0),
        ("undecodable_events", 2.0),
        ("brackets_unclosed", 0.0),
        ("orphaned_frames", 0.0),
        ("depth_overflows", 0.0),
        ("series_over_cap", 0.0),
    ] {
        assert_eq!(s[&("pathcost_events_lost_total".into(), labels(&[("reason", reason)]))], v, "{reason}");
    }
    assert_eq!(s[&("pathcost_probe_events_total".into(), labels(&[("kind", "matched")]))], 9.0);
    let cost = labels(&[("mechanism", "kprobe"), ("target", "__task_pid_nr_ns")]);
    assert!((s[&("pathcost_probe_pair_cost_seconds".into(), cost.clone())] - 120e-9).abs() < 1e-15);
    assert!((s[&("pathcost_probe_span_cost_seconds".into(), cost)] - 50e-9).abs() < 1e-15);
    let probe = |site: &str, symbol: &str, mechanism: &str| {
        labels(&[("site", site), ("symbol", symbol), ("module", "vmlinux"), ("mechanism", mechanism)])
    };
    assert_eq!(s[&("pathcost_probe_info".into(), probe("nf_hook_slow", "nf_hook_slow", "fentry"))], 1.0);
    assert_eq!(s[&("pathcost_probe_info".into(), probe("ip_vs_in", "", "none"))], 1.0);
    // No detection yet: no node_info, and both run counters at 0.
    assert!(!s.keys().any(|(n, _)| n == "pathcost_node_info"));
    assert_eq!(s[&("pathcost_detection_runs_total".into(), labels(&[("outcome", "ok")]))], 0.0);
}

#[test]
fn packets_are_totalled_from_their_hook_calls() {
    let m = metrics(None);
    // Two packets on one skb address: PRE_ROUTING and FORWARD, then the
    // address reused at PRE_ROUTING, which ends the first packet. At the
    // scrape the second has been quiet for far longer than the quiet gap
    // (its timestamps are near 0 on the probes' clock), so it closes too.
    m.record(&call(SiteId::NfHookSlow, 0, "", "", 1, 1000, 300));
    m.record(&call(SiteId::NfHookSlow, 2, "", "", 1, 2000, 200));
    m.record(&call(SiteId::NfHookSlow, 0, "", "", 1, 9000, 400));
    let s = parse(&m.encode(Exposition::Prometheus));
    let packet = labels(&[("site", "nf_hook_slow"), ("mechanism", "fentry")]);
    assert_eq!(s[&("pathcost_packet_netfilter_duration_seconds_count".into(), packet.clone())], 2.0);
    let sum = s[&("pathcost_packet_netfilter_duration_seconds_sum".into(), packet)];
    assert!((sum - 900e-9).abs() < 1e-9, "{sum}");
}

#[test]
fn a_netns_filter_drops_other_namespaces_calls() {
    let m = metrics(Some(7));
    m.record(&call(SiteId::IptDoTable, 0, "nat", "", 0, 1, 150));
    let text = m.encode(Exposition::Prometheus);
    assert!(!text.contains("pathcost_call_duration_seconds_count{"), "{text}");
}

#[test]
fn openmetrics_ends_with_eof_and_names_info_and_counters_its_way() {
    let m = metrics(None);
    let text = m.encode(Exposition::OpenMetrics);
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE pathcost_probe info\n"), "{text}");
    assert!(text.contains("# TYPE pathcost_events_lost counter\n"), "{text}");
    assert!(text.contains("pathcost_events_lost_total{reason=\"unmatched_exits\"} 1\n"), "{text}");
}

#[test]
fn transits_have_their_own_histogram_and_stay_out_of_the_calls() {
    let m = metrics(None);
    m.record(&call(SiteId::Transit, 0, "", "", 7, 1, 4_000));
    m.record(&call(SiteId::Transit, 0, "", "", 8, 10_000, 9_000));
    let s = parse(&m.encode(Exposition::Prometheus));
    let none = labels(&[]);
    assert_eq!(s[&("pathcost_packet_transit_duration_seconds_count".into(), none.clone())], 2.0);
    let sum = s[&("pathcost_packet_transit_duration_seconds_sum".into(), none)];
    assert!((sum - 13_000e-9).abs() < 1e-12, "{sum}");
    assert!(
        !s.keys().any(|(name, l)| name.starts_with("pathcost_call_") && l.get("site").is_some_and(|v| v == "transit")),
        "a transit is not a probed call"
    );
}

#[test]
fn per_call_series_stop_at_the_cap_and_the_rest_is_counted() {
    let m = metrics(None);
    // Every chain name is a new row, as a node whose rulesets keep adding
    // nf_tables base chains would make.
    let over = 40;
    for i in 0..MAX_CALL_SERIES + over {
        m.record(&call(SiteId::NftDoChain, 0, &format!("chain-{i}"), "churn", 0, 1, 500));
    }
    // A row that exists before the cap keeps counting after it.
    m.record(&call(SiteId::NftDoChain, 0, "chain-0", "churn", 0, 1, 500));
    // A new row past the cap is dropped again, every call of it counted.
    m.record(&call(SiteId::IptDoTable, 0, "nat", "", 0, 1, 150));
    m.record(&call(SiteId::IptDoTable, 0, "nat", "", 0, 1, 150));
    let s = parse(&m.encode(Exposition::Prometheus));
    for (family, _) in CALL_HISTOGRAMS {
        let count = format!("{family}_seconds_count");
        let series = s.keys().filter(|(name, _)| *name == count).count();
        assert_eq!(series, MAX_CALL_SERIES, "{family}");
    }
    let first = [("site", "nft_do_chain"), ("hook", "PRE_ROUTING"), ("table", "churn"), ("chain", "chain-0"), ("mechanism", "kprobe")];
    assert_eq!(s[&("pathcost_call_duration_seconds_count".into(), labels(&first))], 2.0);
    let dropped = |(name, l): &(String, BTreeMap<String, String>)| {
        name == "pathcost_call_duration_seconds_count" && l.get("site").is_some_and(|v| v == "ipt_do_table")
    };
    assert!(!s.keys().any(dropped), "a row past the cap became a series");
    let lost = s[&("pathcost_events_lost_total".into(), labels(&[("reason", "series_over_cap")]))];
    assert_eq!(lost, (over + 2) as f64);
}
