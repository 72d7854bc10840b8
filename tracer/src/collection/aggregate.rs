//! The in-kernel aggregates of the aggregating mode: per-CPU log-linear
//! histograms keyed by site, hook, table or chain and network namespace,
//! summed over CPUs here, with percentiles read from the buckets. No event
//! per call crosses to userspace, so the cost per call stays in the kernel
//! and nothing can be dropped by a full ring (a key that finds the map full
//! is counted as `aggregate_overflows`).

use anyhow::{Context as _, Result};
use aya::maps::{HashMap, MapData, PerCpuHashMap};
use tracer_ebpf::{
    log_linear_bounds, AggregateHistogram, AggregateKey, CallNames, SiteId, HOOK_SLOTS, LOG_LINEAR_BUCKETS,
};

use super::c_string;

/// One key's histogram summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLinear {
    pub count: u64,
    pub sum_ns: u64,
    pub self_sum_ns: u64,
    pub max_ns: u64,
    pub descendants_sum: u64,
    pub children_sum: u64,
    /// `buckets[i]` counts calls in `tracer_ebpf::log_linear_bounds(i)`.
    pub buckets: Vec<u64>,
}

impl Default for LogLinear {
    fn default() -> Self {
        LogLinear {
            count: 0,
            sum_ns: 0,
            self_sum_ns: 0,
            max_ns: 0,
            descendants_sum: 0,
            children_sum: 0,
            buckets: vec![0; LOG_LINEAR_BUCKETS],
        }
    }
}

impl LogLinear {
    /// Adds one CPU's histogram.
    pub fn add(&mut self, h: &AggregateHistogram) {
        self.count += h.count;
        self.sum_ns += h.sum_ns;
        self.self_sum_ns += h.self_sum_ns;
        self.max_ns = self.max_ns.max(h.max_ns);
        self.descendants_sum += h.descendants_sum;
        self.children_sum += h.children_sum;
        for (b, v) in self.buckets.iter_mut().zip(h.buckets.iter()) {
            *b += v;
        }
    }

    /// Records `v` ns, as the kernel does (for tests and fixtures).
    pub fn record(&mut self, v: u64) {
        self.count += 1;
        self.sum_ns += v;
        self.self_sum_ns += v;
        self.max_ns = self.max_ns.max(v);
        self.buckets[tracer_ebpf::log_linear_index(v)] += 1;
    }

    /// (representative value, calls) per non-empty bucket: the bucket's
    /// middle, never above the largest call seen.
    pub fn values(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.buckets.iter().enumerate().filter(|(_, &n)| n > 0).map(|(i, &n)| {
            let (low, width) = log_linear_bounds(i);
            ((low + width / 2).min(self.max_ns.max(low)), n)
        })
    }

    /// The same calls in the per-site log2 buckets of
    /// [`super::KernelHistogram`] (`[2^i, 2^(i+1))` ns): every log-linear
    /// bucket lies inside one power of two.
    pub fn log2_buckets(&self) -> Vec<u64> {
        let mut out = vec![0; tracer_ebpf::HIST_BUCKETS];
        for (i, &n) in self.buckets.iter().enumerate().filter(|(_, &n)| n > 0) {
            let k = tracer_ebpf::log2(log_linear_bounds(i).0).min(tracer_ebpf::HIST_BUCKETS - 1);
            out[k] += n;
        }
        out
    }

    /// The value at quantile `q` (0..=1): the middle of the bucket holding
    /// that rank, as hdrhistogram reads its own buckets.
    pub fn quantile(&self, q: f64) -> u64 {
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (v, n) in self.values() {
            seen += n;
            if seen >= rank {
                return v;
            }
        }
        self.max_ns
    }
}

/// One aggregated row: what the calls were and their histogram.
#[derive(Clone, Debug)]
pub struct AggregateRow {
    pub site: SiteId,
    pub hook: Option<u8>,
    pub pf: u8,
    pub netns: u32,
    /// The IPVS input hook's verdict; 0 for other sites.
    pub ret: i32,
    /// iptables table name, or nf_tables chain name ("?" if the name
    /// cache had no room for it).
    pub name: String,
    /// nf_tables table name.
    pub table: String,
    pub histogram: LogLinear,
}

/// Handles on the aggregate and name maps.
pub struct Aggregates {
    map: PerCpuHashMap<MapData, AggregateKey, AggregateHistogram>,
    names: HashMap<MapData, u64, CallNames>,
}

impl Aggregates {
    pub fn take(ebpf: &mut aya::Ebpf) -> Result<Aggregates> {
        let map = PerCpuHashMap::try_from(ebpf.take_map("AGGREGATES").context("no AGGREGATES map")?)?;
        let names = HashMap::try_from(ebpf.take_map("NAMES").context("no NAMES map")?)?;
        Ok(Aggregates { map, names })
    }

    /// Every key's histogram, summed over CPUs (the calibration pair's too:
    /// statistics leave it out, the calibration itself counts it).
    pub fn read(&self) -> Result<Vec<AggregateRow>> {
        let mut rows = Vec::new();
        for entry in self.map.iter() {
            let (key, per_cpu) = entry.context("reading AGGREGATES")?;
            let Some(site) = SiteId::from_u32(u32::from(key.site)) else { continue };
            let mut histogram = LogLinear::default();
            for h in per_cpu.iter() {
                histogram.add(h);
            }
            let (name, table) = match key.name_obj {
                0 => (String::new(), String::new()),
                obj => self
                    .names
                    .get(&obj, 0)
                    .map(|n| (c_string(&n.name), c_string(&n.table)))
                    .unwrap_or_else(|_| ("?".into(), "?".into())),
            };
            rows.push(AggregateRow {
                site,
                hook: (usize::from(key.hook) < HOOK_SLOTS - 1).then_some(key.hook),
                pf: key.pf,
                netns: key.netns,
                ret: key.ret,
                name,
                table,
                histogram,
            });
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic spread of call durations from 50 ns to ~1 ms, heavy
    /// near a few µs like real table walks.
    fn sample() -> Vec<u64> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..20_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let u = (x >> 11) as f64 / (1u64 << 53) as f64;
                (50.0 * (u * 10.0).exp()) as u64 + 1
            })
            .collect()
    }

    #[test]
    fn percentiles_match_hdrhistogram_within_a_few_percent() {
        let mut ours = LogLinear::default();
        let mut hdr = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for v in sample() {
            ours.record(v);
            hdr.record(v).unwrap();
        }
        for q in [0.5, 0.9, 0.99] {
            let (a, b) = (ours.quantile(q) as f64, hdr.value_at_quantile(q) as f64);
            assert!((a - b).abs() / b < 0.035, "p{}: log-linear {a} vs hdrhistogram {b}", q * 100.0);
        }
        assert_eq!(ours.count, hdr.len());
    }

    #[test]
    fn buckets_cover_every_value_once() {
        for v in [0u64, 1, 15, 16, 17, 31, 32, 33, 1000, 123_456, 1 << 32, u64::MAX / 2] {
            let i = tracer_ebpf::log_linear_index(v);
            let (low, width) = log_linear_bounds(i);
            assert!(i == LOG_LINEAR_BUCKETS - 1 || (low <= v && v < low + width), "{v} in bucket {i} [{low}, +{width})");
        }
        assert_eq!(tracer_ebpf::log_linear_index(1 << 40), LOG_LINEAR_BUCKETS - 1);
    }

    #[test]
    fn log2_view_counts_each_call_in_its_power_of_two() {
        let mut h = LogLinear::default();
        for v in [0, 1, 3, 1000, 1023, 1024, 5000] {
            h.record(v);
        }
        let b = h.log2_buckets();
        assert_eq!((b[0], b[1], b[9], b[10], b[12]), (2, 1, 2, 1, 1));
        assert_eq!(b.iter().sum::<u64>(), 7);
    }
}
