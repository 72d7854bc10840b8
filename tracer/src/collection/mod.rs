//! Reads what the probes produced: per-call events from the ring buffer,
//! and the in-kernel counters and log2 histograms, summed over CPUs.

pub mod aggregate;
pub mod calibration;
pub mod runtime;

use std::time::Duration;

use anyhow::{Context as _, Result};
use aya::maps::{MapData, PerCpuArray, RingBuf};
use tracer_ebpf::{
    CallEvent, CallStack, Counter, SiteHistogram, SiteId, COUNTER_COUNT, HIST_BUCKETS, HOOK_SLOTS, NAME_LEN,
    SITE_COUNT,
};

/// Loss and bookkeeping counters, summed over CPUs. Always reported: a
/// number that was skewed must say so.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Losses {
    pub entries: u64,
    pub matched: u64,
    pub unmatched_exits: u64,
    pub depth_overflows: u64,
    pub orphaned_frames: u64,
    pub ring_reserve_failures: u64,
    pub negative_durations: u64,
    /// Events whose site id userspace did not recognise (should stay 0).
    pub undecodable_events: u64,
    /// Tracepoint bracket: opened by a packet on the ingress device, closed
    /// by its route lookup, or never closed (dropped or consumed before
    /// routing, e.g. by a PREROUTING rule).
    #[serde(default)]
    pub brackets_opened: u64,
    #[serde(default)]
    pub brackets_closed: u64,
    #[serde(default)]
    pub brackets_unclosed: u64,
    /// Transit: opened by a packet arriving on the client-facing device,
    /// closed when the same skb leaves on the backend-facing one, or never
    /// closed (not forwarded: dropped, delivered locally).
    #[serde(default)]
    pub transits_opened: u64,
    #[serde(default)]
    pub transits_closed: u64,
    #[serde(default)]
    pub transits_unclosed: u64,
    /// Runs of our programs the kernel skipped because another BPF program
    /// was already running on that CPU (`recursion_misses` in
    /// `bpf_prog_info`, kernels 5.12+; 0 where not exposed).
    #[serde(default)]
    pub bpf_recursion_misses: u64,
    /// Aggregating: calls not counted because the aggregate map had no room
    /// for a new key.
    #[serde(default)]
    pub aggregate_overflows: u64,
}

impl Losses {
    /// Adds another session's counters (the sweep's two phases).
    pub fn absorb(&mut self, other: &Losses) {
        let Losses {
            entries,
            matched,
            unmatched_exits,
            depth_overflows,
            orphaned_frames,
            ring_reserve_failures,
            negative_durations,
            undecodable_events,
            brackets_opened,
            brackets_closed,
            brackets_unclosed,
            transits_opened,
            transits_closed,
            transits_unclosed,
            bpf_recursion_misses,
            aggregate_overflows,
        } = *other;
        self.entries += entries;
        self.matched += matched;
        self.unmatched_exits += unmatched_exits;
        self.depth_overflows += depth_overflows;
        self.orphaned_frames += orphaned_frames;
        self.ring_reserve_failures += ring_reserve_failures;
        self.negative_durations += negative_durations;
        self.undecodable_events += undecodable_events;
        self.brackets_opened += brackets_opened;
        self.brackets_closed += brackets_closed;
        self.brackets_unclosed += brackets_unclosed;
        self.transits_opened += transits_opened;
        self.transits_closed += transits_closed;
        self.transits_unclosed += transits_unclosed;
        self.bpf_recursion_misses += bpf_recursion_misses;
        self.aggregate_overflows += aggregate_overflows;
    }
}

/// One site's in-kernel histogram for one hook, summed over CPUs.
#[derive(Clone, Debug)]
pub struct KernelHistogram {
    pub site: SiteId,
    /// `NF_INET_*` hook number, or `None` when calls carry no hook.
    pub hook: Option<u8>,
    pub count: u64,
    pub sum_ns: u64,
    pub self_sum_ns: u64,
    pub max_ns: u64,
    /// `buckets[i]` counts calls of `[2^i, 2^(i+1))` ns.
    pub buckets: Vec<u64>,
}

/// Sum of `recursion_misses` over every loaded program of `ebpf`. aya 0.14
/// does not expose the field, so the kernel is asked directly.
pub fn recursion_misses(ebpf: &aya::Ebpf) -> u64 {
    use std::os::fd::{AsFd as _, AsRawFd as _};

    use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_prog_info};
    let mut total = 0;
    for (_, program) in ebpf.programs() {
        let Ok(fd) = program.fd() else { continue };
        // SAFETY: zeroed bpf_attr/bpf_prog_info are valid; the kernel
        // writes at most info_len bytes into info.
        unsafe {
            let mut info: bpf_prog_info = std::mem::zeroed();
            let mut attr: bpf_attr = std::mem::zeroed();
            attr.info.bpf_fd = fd.as_fd().as_raw_fd() as u32;
            attr.info.info_len = std::mem::size_of::<bpf_prog_info>() as u32;
            attr.info.info = (&mut info as *mut bpf_prog_info) as u64;
            let rc = libc::syscall(
                libc::SYS_bpf,
                bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_int,
                &mut attr as *mut bpf_attr,
                std::mem::size_of::<bpf_attr>() as u32,
            );
            if rc == 0 {
                total += info.recursion_misses;
            }
        }
    }
    total
}

/// Read-only handles on the programs' maps.
pub struct KernelMaps {
    counters: PerCpuArray<MapData, u64>,
    /// Read for the entry and matched-exit counts it keeps per CPU.
    call_stack: PerCpuArray<MapData, CallStack>,
    histograms: PerCpuArray<MapData, SiteHistogram>,
    /// Aggregating mode's per-key histograms (empty with events).
    pub aggregates: aggregate::Aggregates,
    /// The programs loaded when the maps were taken (the sites', not the
    /// calibration pair loaded later), for their run-time counters.
    pub programs: runtime::OwnPrograms,
}

impl KernelMaps {
    pub fn take(ebpf: &mut aya::Ebpf) -> Result<KernelMaps> {
        let counters = PerCpuArray::try_from(ebpf.take_map("COUNTERS").context("no COUNTERS map")?)?;
        let histograms =
            PerCpuArray::try_from(ebpf.take_map("HISTOGRAMS").context("no HISTOGRAMS map")?)?;
        let aggregates = aggregate::Aggregates::take(ebpf)?;
        let call_stack = PerCpuArray::try_from(ebpf.take_map("CALL_STACK").context("no CALL_STACK map")?)?;
        Ok(KernelMaps { counters, call_stack, histograms, aggregates, programs: runtime::OwnPrograms::of(ebpf) })
    }

    /// Empties every CPU's call stack (see `attach::clear_call_stacks`).
    pub fn clear_call_stacks(&mut self) -> Result<()> {
        crate::probes::attach::empty_call_stacks(&mut self.call_stack)
    }

    pub fn losses(&self) -> Result<Losses> {
        let mut sums = [0u64; COUNTER_COUNT];
        for (i, sum) in sums.iter_mut().enumerate() {
            let per_cpu = self.counters.get(&(i as u32), 0).context("reading COUNTERS")?;
            *sum = per_cpu.iter().sum();
        }
        let stacks = self.call_stack.get(&0, 0).context("reading CALL_STACK")?;
        Ok(Losses {
            entries: stacks.iter().map(|s| s.entries).sum(),
            matched: stacks.iter().map(|s| s.matched).sum(),
            unmatched_exits: sums[Counter::UnmatchedExits as usize],
            depth_overflows: sums[Counter::DepthOverflows as usize],
            orphaned_frames: sums[Counter::OrphanedFrames as usize],
            ring_reserve_failures: sums[Counter::RingReserveFailures as usize],
            negative_durations: sums[Counter::NegativeDurations as usize],
            undecodable_events: 0,
            brackets_opened: sums[Counter::BracketsOpened as usize],
            brackets_closed: sums[Counter::BracketsClosed as usize],
            brackets_unclosed: sums[Counter::BracketsUnclosed as usize],
            transits_opened: sums[Counter::TransitsOpened as usize],
            transits_closed: sums[Counter::TransitsClosed as usize],
            transits_unclosed: sums[Counter::TransitsUnclosed as usize],
            // Filled by the session, which owns the programs.
            bpf_recursion_misses: 0,
            aggregate_overflows: sums[Counter::AggregateOverflows as usize],
        })
    }

    /// Non-empty in-kernel histograms of every site and hook: the log2
    /// histograms kept with events, or the aggregates folded into the same
    /// view when aggregating (the programs then keep only those).
    pub fn histograms(&self) -> Result<Vec<KernelHistogram>> {
        let mut out: Vec<KernelHistogram> = Vec::new();
        for site in SiteId::ALL {
            for slot in 0..HOOK_SLOTS {
                let index = (site as usize * HOOK_SLOTS + slot) as u32;
                let per_cpu = self.histograms.get(&index, 0).context("reading HISTOGRAMS")?;
                let mut h = KernelHistogram {
                    site,
                    hook: (slot < HOOK_SLOTS - 1).then_some(slot as u8),
                    count: 0,
                    sum_ns: 0,
                    self_sum_ns: 0,
                    max_ns: 0,
                    buckets: vec![0; HIST_BUCKETS],
                };
                for cpu in per_cpu.iter() {
                    h.count += cpu.count;
                    h.sum_ns += cpu.sum_ns;
                    h.self_sum_ns += cpu.self_sum_ns;
                    h.max_ns = h.max_ns.max(cpu.max_ns);
                    for (b, v) in h.buckets.iter_mut().zip(cpu.buckets.iter()) {
                        *b += v;
                    }
                }
                if h.count > 0 {
                    out.push(h);
                }
            }
        }
        debug_assert!(SITE_COUNT == SiteId::ALL.len());
        for row in self.aggregates.read()? {
            let h = &row.histogram;
            let i = match out.iter().position(|k| k.site == row.site && k.hook == row.hook) {
                Some(i) => i,
                None => {
                    out.push(KernelHistogram {
                        site: row.site,
                        hook: row.hook,
                        count: 0,
                        sum_ns: 0,
                        self_sum_ns: 0,
                        max_ns: 0,
                        buckets: vec![0; HIST_BUCKETS],
                    });
                    out.len() - 1
                }
            };
            let k = &mut out[i];
            k.count += h.count;
            k.sum_ns += h.sum_ns;
            k.self_sum_ns += h.self_sum_ns;
            k.max_ns = k.max_ns.max(h.max_ns);
            for (b, v) in k.buckets.iter_mut().zip(h.log2_buckets()) {
                *b += v;
            }
        }
        Ok(out)
    }

    /// Calls counted in-kernel for one site, over all hooks.
    pub fn site_count(&self, site: SiteId) -> Result<u64> {
        Ok(self.histograms()?.iter().filter(|h| h.site == site).map(|h| h.count).sum())
    }
}

/// A completed call, decoded from the ring buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub site: SiteId,
    pub hook: Option<u8>,
    pub pf: u8,
    pub cpu: u32,
    pub depth: u8,
    pub children: u16,
    pub descendants: u16,
    /// Inode of the packet's network namespace (0 when unknown).
    pub netns: u32,
    pub skb: u64,
    pub start_ns: u64,
    pub duration_ns: u64,
    pub self_ns: u64,
    /// Time in nested transmit sites (IPVS forwarding from inside its hook).
    pub transmit_ns: u64,
    pub ret: i32,
    /// iptables table name, or nf_tables chain name.
    pub name: String,
    /// nf_tables table name.
    pub table: String,
}

#[cfg(test)]
impl Call {
    /// A completed call for tests: IPv4, outermost, no nested calls, self
    /// time equal to its duration, verdict ACCEPT; tests set what they vary.
    pub(crate) fn sample(site: SiteId, hook: u8, start_ns: u64, duration_ns: u64) -> Call {
        Call {
            site,
            hook: Some(hook),
            pf: 2,
            cpu: 0,
            depth: 0,
            children: 0,
            descendants: 0,
            netns: 0,
            skb: 0xffff_0000,
            start_ns,
            duration_ns,
            self_ns: duration_ns,
            transmit_ns: 0,
            ret: 1,
            name: String::new(),
            table: String::new(),
        }
    }
}

fn c_string(bytes: &[u8; NAME_LEN]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

impl Call {
    /// Decodes one ring-buffer record; `None` for a short or unknown record.
    pub fn decode(bytes: &[u8]) -> Option<Call> {
        if bytes.len() < std::mem::size_of::<CallEvent>() {
            return None;
        }
        // SAFETY: the length is checked above and CallEvent is plain old
        // data; read_unaligned because ring records are only 8-aligned.
        let ev: CallEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let site = SiteId::from_u32(ev.site)?;
        Some(Call {
            site,
            hook: (usize::from(ev.hook) < HOOK_SLOTS - 1).then_some(ev.hook),
            pf: ev.pf,
            cpu: ev.cpu,
            depth: ev.depth,
            children: ev.children,
            descendants: ev.descendants,
            netns: ev.netns,
            skb: ev.skb,
            start_ns: ev.start_ns,
            duration_ns: ev.duration_ns,
            self_ns: ev.self_ns,
            transmit_ns: ev.transmit_ns,
            ret: ev.ret,
            name: c_string(&ev.name),
            table: c_string(&ev.table),
        })
    }
}

/// How often the reader empties the ring. The programs submit without
/// waking it (a wakeup per event would cost more than the probe and land in
/// the measured path), so it polls: at this period the 4 MiB ring would
/// need over a million events per second to overflow.
const POLL_PERIOD: Duration = Duration::from_millis(20);

/// The per-call event stream, polled from tokio.
pub struct EventStream {
    ring: RingBuf<MapData>,
    poll: tokio::time::Interval,
    pub undecodable: u64,
}

impl EventStream {
    pub fn take(ebpf: &mut aya::Ebpf) -> Result<EventStream> {
        let ring = RingBuf::try_from(ebpf.take_map("EVENTS").context("no EVENTS map")?)?;
        let mut poll = tokio::time::interval(POLL_PERIOD);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(EventStream { ring, poll, undecodable: 0 })
    }

    /// Waits for the next poll, then hands every event in the ring to `sink`.
    pub async fn next_batch(&mut self, sink: impl FnMut(Call)) -> Result<usize> {
        self.poll.tick().await;
        Ok(self.drain(sink))
    }

    /// Hands every event already in the ring to `sink` without waiting.
    pub fn drain(&mut self, sink: impl FnMut(Call)) -> usize {
        drain_ring(&mut self.ring, &mut self.undecodable, sink)
    }
}

fn drain_ring(ring: &mut RingBuf<MapData>, undecodable: &mut u64, mut sink: impl FnMut(Call)) -> usize {
    let mut n = 0;
    while let Some(item) = ring.next() {
        match Call::decode(&item) {
            Some(call) => sink(call),
            None => *undecodable += 1,
        }
        n += 1;
    }
    n
}
