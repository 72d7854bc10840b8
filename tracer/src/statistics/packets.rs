//! Per-packet totals: the time one packet spent in netfilter, summed over
//! the hooks it traversed on this host.
//!
//! A packet is followed by its skb address through its `nf_hook_slow`
//! calls. Calls can nest (IPVS transmits from inside its LOCAL_IN hook, so
//! LOCAL_OUT and POST_ROUTING run inside it), so the total is the length of
//! the union of the calls' time intervals, never a plain sum. A packet ends
//! when its skb shows up again at a hook it already passed (the address was
//! reused for a new packet) or after a long quiet gap.

use std::collections::HashMap;

use hdrhistogram::Histogram;
use tracer_ebpf::SiteId;

use super::new_histogram;
use crate::collection::{calibration::Corrections, Call};

/// An skb not seen for this long is a finished packet (5 s: generous for
/// emulated kernels, where a packet's hooks can be milliseconds apart).
const QUIET_GAP_NS: u64 = 5_000_000_000;

#[derive(Debug)]
struct OpenPacket {
    hooks_seen: u8,
    /// (start, end) of each hook call, raw and with the probes' own cost
    /// taken out of its duration.
    raw: Vec<(u64, u64)>,
    corrected: Vec<(u64, u64)>,
    last_end: u64,
}

/// Length of the union of `intervals`.
fn union_ns(intervals: &mut [(u64, u64)]) -> u64 {
    intervals.sort_unstable();
    let mut total = 0;
    let mut current: Option<(u64, u64)> = None;
    for &(s, e) in intervals.iter() {
        current = match current {
            Some((cs, ce)) if s <= ce => Some((cs, ce.max(e))),
            Some((cs, ce)) => {
                total += ce - cs;
                Some((s, e))
            }
            None => Some((s, e)),
        };
    }
    if let Some((cs, ce)) = current {
        total += ce - cs;
    }
    total
}

/// Accumulates per-packet netfilter totals from `nf_hook_slow` calls.
#[derive(Debug)]
pub struct PacketTotals {
    open: HashMap<u64, OpenPacket>,
    pub per_packet: Histogram<u64>,
    /// The same with the probes' own cost removed from every hook call.
    pub per_packet_corrected: Histogram<u64>,
    /// Number of hooks each finished packet traversed.
    pub hooks_per_packet: Histogram<u64>,
}

impl Default for PacketTotals {
    fn default() -> Self {
        PacketTotals {
            open: HashMap::new(),
            per_packet: new_histogram(),
            per_packet_corrected: new_histogram(),
            hooks_per_packet: Histogram::new_with_bounds(1, 64, 2)
                .expect("static histogram bounds are valid"),
        }
    }
}

impl PacketTotals {
    pub fn record(&mut self, call: &Call, corrections: &Corrections) {
        // A packet's netfilter time: its hook calls, or, with the
        // tracepoint backend, its PREROUTING bracket.
        if !matches!(call.site, SiteId::NfHookSlow | SiteId::Bracket) || call.skb == 0 {
            return;
        }
        let Some(hook) = call.hook else { return };
        let bit = 1u8 << hook;
        let end = call.start_ns + call.duration_ns;
        if let Some(p) = self.open.get(&call.skb) {
            let reused = p.hooks_seen & bit != 0 || call.start_ns > p.last_end + QUIET_GAP_NS;
            if reused {
                if let Some(p) = self.open.remove(&call.skb) {
                    self.finish(p);
                }
            }
        }
        let p = self.open.entry(call.skb).or_insert_with(|| OpenPacket {
            hooks_seen: 0,
            raw: Vec::new(),
            corrected: Vec::new(),
            last_end: 0,
        });
        p.hooks_seen |= bit;
        p.raw.push((call.start_ns, end));
        let corrected = corrections.inclusive(call.site, call.duration_ns, call.descendants);
        p.corrected.push((call.start_ns, call.start_ns + corrected));
        p.last_end = p.last_end.max(end);
    }

    fn finish(&mut self, mut p: OpenPacket) {
        self.per_packet.saturating_record(union_ns(&mut p.raw).max(1));
        self.per_packet_corrected.saturating_record(union_ns(&mut p.corrected).max(1));
        self.hooks_per_packet.saturating_record(u64::from(p.hooks_seen.count_ones()).max(1));
    }

    /// Closes the packets not seen for a quiet gap before `now_ns` (the
    /// probes' clock): a long-running session's packets whose skb address
    /// is never reused would otherwise stay open and uncounted.
    pub fn expire(&mut self, now_ns: u64) {
        let quiet: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, p)| p.last_end + QUIET_GAP_NS < now_ns)
            .map(|(&skb, _)| skb)
            .collect();
        for skb in quiet {
            if let Some(p) = self.open.remove(&skb) {
                self.finish(p);
            }
        }
    }

    /// Closes every packet still open (at the end of a run).
    pub fn flush(&mut self) {
        let open: Vec<_> = self.open.drain().map(|(_, p)| p).collect();
        for p in open {
            self.finish(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook_call(skb: u64, hook: u8, start: u64, dur: u64) -> Call {
        Call { skb, ..Call::sample(SiteId::NfHookSlow, hook, start, dur) }
    }

    impl PacketTotals {
        fn record_raw(&mut self, call: &Call) {
            self.record(call, &Corrections::default());
        }
    }

    #[test]
    fn nested_hooks_count_once_and_reuse_starts_a_new_packet() {
        let mut t = PacketTotals::default();
        // IPVS-like: PRE_ROUTING 100..200, then LOCAL_IN 300..1300 with a
        // nested LOCAL_OUT 400..600 and POST_ROUTING 700..800, which
        // complete (and arrive) before LOCAL_IN does.
        t.record_raw(&hook_call(1, 0, 100, 100));
        t.record_raw(&hook_call(1, 3, 400, 200));
        t.record_raw(&hook_call(1, 4, 700, 100));
        t.record_raw(&hook_call(1, 1, 300, 1000));
        // The same skb address at PRE_ROUTING again: a new packet.
        t.record_raw(&hook_call(1, 0, 5000, 50));
        t.flush();
        assert_eq!(t.per_packet.len(), 2);
        assert_eq!(t.per_packet.max(), 1100); // 100 + 1000, nested time not counted twice
        assert_eq!(t.per_packet.min(), 50);
        assert_eq!(t.hooks_per_packet.max(), 4);
    }

    #[test]
    fn quiet_packets_expire_and_recent_ones_stay_open() {
        let mut t = PacketTotals::default();
        t.record_raw(&hook_call(1, 0, 100, 100));
        t.record_raw(&hook_call(2, 0, QUIET_GAP_NS + 1_000, 100));
        t.expire(QUIET_GAP_NS + 500);
        assert_eq!(t.per_packet.len(), 1, "only the first packet was quiet long enough");
        t.flush();
        assert_eq!(t.per_packet.len(), 2);
    }
}
