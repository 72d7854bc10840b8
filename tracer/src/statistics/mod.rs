//! Turns per-call events into distributions: an hdrhistogram per (site,
//! hook, table/chain), for inclusive and self time, raw and corrected for
//! the probes' own cost, plus the time each packet spent per hook.

pub mod packets;

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use tracer_ebpf::SiteId;

use crate::{
    collection::{aggregate::AggregateRow, calibration::Corrections, Call},
    probes::ProbeSite,
};

/// Histograms keep 3 significant digits up to one minute: more than
/// enough for nanosecond calls, and bounded in memory.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static histogram bounds are valid")
}

/// Identity of a row in the report.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SiteKey {
    pub site: SiteId,
    pub hook: Option<u8>,
    /// iptables table (`nat`, `filter`, ...) or nf_tables table name.
    pub table: String,
    /// nf_tables chain name; empty for iptables and other sites.
    pub chain: String,
    /// The IPVS input hook's netfilter verdict: STOLEN when IPVS took the
    /// packet (and transmitted it from inside the hook), ACCEPT when it let
    /// it pass. Empty for other sites.
    pub verdict: &'static str,
}

/// Name of a netfilter verdict (`NF_DROP` = 0 ... `NF_STOP` = 5).
pub fn verdict_name(ret: i32) -> &'static str {
    match ret {
        0 => "DROP",
        1 => "ACCEPT",
        2 => "STOLEN",
        3 => "QUEUE",
        4 => "REPEAT",
        5 => "STOP",
        _ => "OTHER",
    }
}

impl SiteKey {
    pub fn of(call: &Call) -> SiteKey {
        match call.site {
            // nft: `name` is the chain, `table` its table.
            SiteId::NftDoChain => SiteKey {
                site: call.site,
                hook: call.hook,
                table: call.table.clone(),
                chain: call.name.clone(),
                verdict: "",
            },
            SiteId::IpvsIn => SiteKey {
                site: call.site,
                hook: call.hook,
                table: String::new(),
                chain: String::new(),
                verdict: verdict_name(call.ret),
            },
            _ => SiteKey {
                site: call.site,
                hook: call.hook,
                table: call.name.clone(),
                chain: String::new(),
                verdict: "",
            },
        }
    }

    pub fn site_name(&self) -> &'static str {
        ProbeSite::by_id(self.site).map_or("?", |s| s.name)
    }
}

/// Distributions of one row.
#[derive(Clone, Debug)]
pub struct Distribution {
    pub inclusive: Histogram<u64>,
    pub exclusive: Histogram<u64>,
    pub inclusive_corrected: Histogram<u64>,
    pub exclusive_corrected: Histogram<u64>,
}

impl Default for Distribution {
    fn default() -> Self {
        Distribution {
            inclusive: new_histogram(),
            exclusive: new_histogram(),
            inclusive_corrected: new_histogram(),
            exclusive_corrected: new_histogram(),
        }
    }
}

/// Summary figures of one histogram, in ns.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub count: u64,
    pub mean_ns: f64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

impl Summary {
    pub fn of(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: h.len(),
            mean_ns: h.mean(),
            p50_ns: h.value_at_quantile(0.50),
            p90_ns: h.value_at_quantile(0.90),
            p99_ns: h.value_at_quantile(0.99),
            max_ns: h.max(),
        }
    }
}

/// Records every call; knows nothing of where calls come from, so it is
/// testable with made-up calls.
#[derive(Debug, Default)]
pub struct CallStatistics {
    pub rows: BTreeMap<SiteKey, Distribution>,
    pub corrections: Corrections,
    pub calls: u64,
}

impl CallStatistics {
    pub fn new(corrections: Corrections) -> CallStatistics {
        CallStatistics { corrections, ..Default::default() }
    }

    pub fn record(&mut self, call: &Call) {
        self.record_n(call, 1);
    }

    /// Records `n` calls like `call`.
    pub fn record_n(&mut self, call: &Call, n: u64) {
        if call.site == SiteId::Calibration || n == 0 {
            return;
        }
        self.calls += n;
        let d = self.rows.entry(SiteKey::of(call)).or_default();
        // Zero-length calls exist at clock resolution; hdrhistogram's lowest
        // bound is 1, so they are recorded as 1 ns.
        let rec = |h: &mut Histogram<u64>, v: u64| h.saturating_record_n(v.max(1), n);
        rec(&mut d.inclusive, call.duration_ns);
        rec(&mut d.exclusive, call.self_ns);
        let c = &self.corrections;
        rec(&mut d.inclusive_corrected, c.inclusive(call.site, call.duration_ns, call.descendants));
        rec(&mut d.exclusive_corrected, c.exclusive(call.site, call.self_ns, call.children));
    }

    /// The same statistics from the kernel's aggregates instead of events:
    /// each bucket's calls at its middle value. The kernel keeps self time
    /// and nested-call counts only as sums per row, so exclusive times are
    /// the inclusive ones scaled by the row's self-time share, and the
    /// corrections use the row's mean number of nested calls.
    pub fn from_aggregates(rows: &[AggregateRow], corrections: Corrections, netns: Option<u32>) -> CallStatistics {
        let mut stats = CallStatistics::new(corrections);
        // The transit is a span per packet, not a probed call (events only).
        for row in rows.iter().filter(|r| r.site != SiteId::Transit && netns.is_none_or(|n| n == r.netns)) {
            let h = &row.histogram;
            let self_share = h.self_sum_ns as f64 / h.sum_ns.max(1) as f64;
            let mean = |sum: u64| u16::try_from((sum as f64 / h.count.max(1) as f64).round() as u64).unwrap_or(u16::MAX);
            for (v, n) in h.values() {
                let call = Call {
                    site: row.site,
                    hook: row.hook,
                    pf: row.pf,
                    cpu: 0,
                    depth: 0,
                    children: mean(h.children_sum),
                    descendants: mean(h.descendants_sum),
                    netns: row.netns,
                    skb: 0,
                    start_ns: 0,
                    duration_ns: v,
                    self_ns: (v as f64 * self_share).round() as u64,
                    transmit_ns: 0,
                    ret: row.ret,
                    name: row.name.clone(),
                    table: row.table.clone(),
                };
                stats.record_n(&call, n);
            }
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(site: SiteId, hook: u8, name: &str, table: &str, dur: u64, self_ns: u64) -> Call {
        Call { self_ns, name: name.into(), table: table.into(), ..Call::sample(site, hook, 1, dur) }
    }

    #[test]
    fn calls_are_grouped_by_site_hook_table_and_chain() {
        let mut s = CallStatistics::new(Corrections::default());
        s.record(&call(SiteId::IptDoTable, 0, "nat", "", 1000, 1000));
        s.record(&call(SiteId::IptDoTable, 0, "nat", "", 3000, 3000));
        s.record(&call(SiteId::IptDoTable, 3, "nat", "", 500, 500));
        s.record(&call(SiteId::NftDoChain, 0, "nat-prerouting", "kube-proxy", 700, 700));
        s.record(&call(SiteId::Calibration, 5, "", "", 7, 7));
        assert_eq!(s.rows.len(), 3);
        assert_eq!(s.calls, 4);
        let key = SiteKey { site: SiteId::IptDoTable, hook: Some(0), table: "nat".into(), chain: String::new(), verdict: "" };
        let sum = Summary::of(&s.rows[&key].inclusive);
        assert_eq!(sum.count, 2);
        assert!((sum.mean_ns - 2000.0).abs() < 5.0, "{}", sum.mean_ns);
        assert_eq!(sum.max_ns, 3001); // hdrhistogram's equivalent-value rounding at 3 digits
        let nft = SiteKey {
            site: SiteId::NftDoChain,
            hook: Some(0),
            table: "kube-proxy".into(),
            chain: "nat-prerouting".into(),
            verdict: "",
        };
        assert!(s.rows.contains_key(&nft));
    }
}
