//! Entry/exit programs and the per-CPU call stack that pairs them.
//!
//! Every site gets the same two handlers, `on_entry` and `on_exit`; the
//! per-site program wrappers at the bottom only fix the site id and the way
//! arguments are read (pt_regs for kprobes, the BTF argument array for
//! fentry/fexit). What each argument means on this kernel comes from the
//! `CONFIG` global that userspace fills from BTF before loading.
//!
//! Why the unsafe blocks are sound, in two recurring cases (each block's
//! `// SAFETY:` line names its case and what is particular to it):
//!
//! - **Per-CPU map slots.** A pointer from `get_ptr_mut`/`get_ptr` on a
//!   per-CPU map is non-null (the lookup returned `Some`), aligned, and
//!   points into this CPU's copy of the value, which stays allocated for
//!   the whole program run; the verifier checks every access through it
//!   against the value's size. The kernel runs at most one kprobe or
//!   tracepoint program at a time per CPU (`bpf_prog_active`) and skips a
//!   program that would re-enter itself (counted as a recursion miss), so
//!   the slot is not written under our feet by our own programs of those
//!   kinds; an fentry program of another site arriving from an interrupt
//!   could interleave, which at worst skews one figure (the depth and
//!   index masks keep every access in bounds), never touches memory
//!   outside the slot.
//! - **Kernel memory reads.** `bpf_probe_read_kernel` and its string form
//!   copy through the kernel's fault-tolerant copy: an address that is bad
//!   (a layout offset that does not fit this kernel, a freed object) makes
//!   the helper fail, and the read returns a default, instead of faulting.
//!   The program never dereferences a kernel address itself, and the
//!   values read are plain integers or bytes, for which every bit pattern
//!   is valid.

use aya_ebpf::{
    helpers::{
        bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes,
    },
    macros::{fentry, fexit, kprobe, kretprobe, map, raw_tracepoint},
    maps::{HashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{FEntryContext, FExitContext, ProbeContext, RawTracePointContext, RetProbeContext},
    EbpfContext,
};
use aya_log_ebpf::warn;
use tracer_ebpf::{
    histogram_index, log2, log_linear_index, AggregateHistogram, AggregateKey, CallEvent, CallNames, CallStack,
    Counter, Frame, OpenBracket, ProbeConfig, SiteHistogram, SiteId, COUNTER_COUNT, HIST_BUCKETS, HOOK_SLOTS,
    HOOK_UNKNOWN, LOG_LINEAR_BUCKETS, MAX_DEPTH, NAME_LEN, NO_ARG, NO_OFFSET, SITE_COUNT,
};

/// Written by userspace before load (see `ProbeConfig`).
#[unsafe(no_mangle)]
static CONFIG: ProbeConfig = ProbeConfig::EMPTY;

#[map]
static CALL_STACK: PerCpuArray<CallStack> = PerCpuArray::with_max_entries(1, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT as u32, 0);

#[map]
static HISTOGRAMS: PerCpuArray<SiteHistogram> =
    PerCpuArray::with_max_entries((SITE_COUNT * HOOK_SLOTS) as u32, 0);

#[map]
static OPEN_BRACKET: PerCpuArray<OpenBracket> = PerCpuArray::with_max_entries(1, 0);

#[map]
static OPEN_TRANSIT: PerCpuArray<OpenBracket> = PerCpuArray::with_max_entries(1, 0);

/// Aggregating mode: one log-linear histogram per key and CPU. Preallocated
/// (3.9 KiB per key and CPU), so the size is a budget: userspace sets it
/// (256 keys aggregating, 1 with events), and a key that finds no room is
/// counted as an aggregate overflow.
#[map]
static AGGREGATES: PerCpuHashMap<AggregateKey, AggregateHistogram> = PerCpuHashMap::with_max_entries(256, 0);

/// All zeroes: the initial value of a new aggregate, too large for the
/// 512-byte stack. Never written.
#[map]
static ZERO_AGGREGATE: PerCpuArray<AggregateHistogram> = PerCpuArray::with_max_entries(1, 0);

/// Names of the tables and chains the aggregates' keys point to, read once
/// per new key. Shared by all CPUs; userspace reads it with the aggregates.
#[map]
static NAMES: HashMap<u64, CallNames> = HashMap::with_max_entries(1024, 0);

/// `bpf_map_update_elem` flag: insert only if the key is absent.
const BPF_NOEXIST: u64 = 1;

/// Longer than any probed call lasts, even under TCG on a loaded host (they
/// take micro- to milliseconds): a frame open this long lost its exit.
const STALE_FRAME_NS: u64 = 1_000_000_000;

/// 4 MiB: about 37,000 events in flight. Userspace may resize it.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// `bpf_ringbuf_submit` flag: do not wake the reader (it polls).
const BPF_RB_NO_WAKEUP: u64 = 1;

#[inline(always)]
fn config() -> &'static ProbeConfig {
    // Volatile so the compiler does not fold the placeholder value in: the
    // loader rewrites this global in the object before load.
    // SAFETY: `&&CONFIG` is a valid, aligned reference to a `&ProbeConfig`
    // that points at the static itself; the volatile read yields that same
    // reference, and the static lives as long as the program and is never
    // written while it runs (only the loader rewrites it, before load).
    unsafe { core::ptr::read_volatile(&&CONFIG) }
}

#[inline(always)]
fn count(counter: Counter) {
    count_n(counter, 1);
}

#[inline(always)]
fn count_n(counter: Counter, n: u64) {
    if let Some(c) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: this CPU's slot of the per-CPU COUNTERS array, found by a
        // lookup at a `Counter` index below COUNTER_COUNT (per-CPU map slots,
        // module header); updated through the raw pointer, no reference kept.
        unsafe { *c += n };
    }
}

/// Argument access that is the same for kprobes and fentry/fexit, by an
/// index known only at load time.
trait Args {
    fn arg_at(&self, n: i8) -> u64;
}

impl Args for ProbeContext {
    /// The verifier only allows constant offsets into pt_regs, and LLVM
    /// happily turns "pick one of five loads" into one load at a computed
    /// offset. Volatile loads of every argument register, then a pick among
    /// the values, keep each access at its constant offset.
    #[inline(always)]
    fn arg_at(&self, n: i8) -> u64 {
        let regs = self.regs;
        // SAFETY: `regs` is the pt_regs the kernel handed this kprobe program
        // as its context, readable for the whole run: what `arg_registers`
        // requires.
        let [a0, a1, a2, a3, a4] = unsafe { arg_registers(regs) };
        match n {
            0 => a0,
            1 => a1,
            2 => a2,
            3 => a3,
            4 => a4,
            _ => 0,
        }
    }
}

/// The first five argument registers.
///
/// # Safety
///
/// `regs` must be the program's own pt_regs context.
#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
unsafe fn arg_registers(regs: *const aya_ebpf::bindings::pt_regs) -> [u64; 5] {
    use core::ptr::{addr_of, read_volatile};
    // SAFETY: `regs` is the context pointer (the caller's contract);
    // `addr_of!` takes each field's address without making a reference, and
    // each read is a u64 at that field's constant offset, the only kind of
    // context access the verifier accepts.
    unsafe {
        [
            read_volatile(addr_of!((*regs).rdi)),
            read_volatile(addr_of!((*regs).rsi)),
            read_volatile(addr_of!((*regs).rdx)),
            read_volatile(addr_of!((*regs).rcx)),
            read_volatile(addr_of!((*regs).r8)),
        ]
    }
}

/// The first five argument registers.
///
/// # Safety
///
/// `regs` must be the program's own pt_regs context.
#[cfg(bpf_target_arch = "aarch64")]
#[inline(always)]
unsafe fn arg_registers(regs: *const aya_ebpf::bindings::user_pt_regs) -> [u64; 5] {
    use core::ptr::{addr_of, read_volatile};
    // SAFETY: as on x86_64: the context pointer, read field by field at
    // constant offsets (`regs[0]` to `regs[4]`) without making a reference.
    unsafe {
        [
            read_volatile(addr_of!((*regs).regs[0])),
            read_volatile(addr_of!((*regs).regs[1])),
            read_volatile(addr_of!((*regs).regs[2])),
            read_volatile(addr_of!((*regs).regs[3])),
            read_volatile(addr_of!((*regs).regs[4])),
        ]
    }
}

/// fentry/fexit arguments through `bpf_get_func_arg` (5.17+), which takes
/// a run-time index and checks it against the function's argument count.
#[inline(always)]
fn func_arg(ctx: *mut core::ffi::c_void, n: i8) -> u64 {
    if n < 0 {
        return 0;
    }
    let mut value = 0u64;
    // SAFETY: `ctx` is this fentry/fexit program's own context, the one the
    // helper expects (it reads the arguments the trampoline saved beside
    // it); the helper checks `n` against the traced function's argument
    // count and fails instead of reading past them; `value` is a live local
    // u64 it writes once.
    let ret = unsafe { aya_ebpf::helpers::generated::bpf_get_func_arg(ctx, n as u32, &mut value) };
    if ret == 0 { value } else { 0 }
}

impl Args for FEntryContext {
    #[inline(always)]
    fn arg_at(&self, n: i8) -> u64 {
        func_arg(self.as_ptr(), n)
    }
}

impl Args for FExitContext {
    #[inline(always)]
    fn arg_at(&self, n: i8) -> u64 {
        func_arg(self.as_ptr(), n)
    }
}

/// The frame at `idx`, indexed so the verifier can prove it in bounds.
/// Reading the index through a volatile load stops LLVM from folding the
/// arithmetic that produced it into the address (e.g. `depth*104 - 104`,
/// whose lower bound the verifier cannot see); the mask then bounds it.
#[inline(always)]
fn frame_at(frames: &mut [Frame; MAX_DEPTH], idx: usize) -> &mut Frame {
    // SAFETY: `&idx` is a reference to a live local usize, so valid and
    // aligned for the read; the volatile read only hides its value from LLVM.
    let idx = unsafe { core::ptr::read_volatile(&idx) } & (MAX_DEPTH - 1);
    &mut frames[idx]
}

#[inline(always)]
fn read_u64(addr: u64) -> u64 {
    if addr == 0 {
        return 0;
    }
    // SAFETY: a kernel memory read (module header): a bad `addr` is an
    // error turned into 0, and any 8 bytes are a valid u64.
    unsafe { bpf_probe_read_kernel(addr as *const u64) }.unwrap_or(0)
}

#[inline(always)]
fn read_u32(addr: u64) -> u32 {
    // SAFETY: a kernel memory read (module header): a bad `addr`, including
    // 0, is an error turned into 0, and any 4 bytes are a valid u32.
    unsafe { bpf_probe_read_kernel(addr as *const u32) }.unwrap_or(0)
}

#[inline(always)]
fn read_u8(addr: u64) -> u8 {
    // SAFETY: a kernel memory read (module header): a bad `addr` is an
    // error turned into HOOK_UNKNOWN; any byte is a valid u8.
    unsafe { bpf_probe_read_kernel(addr as *const u8) }.unwrap_or(HOOK_UNKNOWN)
}

/// Copies a NUL-terminated name, inline at `addr` or behind the pointer
/// stored at `addr`.
#[inline(always)]
fn read_name(addr: u64, is_ptr: u8, out: &mut [u8; NAME_LEN]) {
    out[0] = 0;
    let src = if is_ptr != 0 { read_u64(addr) } else { addr };
    if src != 0 {
        // SAFETY: a kernel memory read (module header): the helper copies at
        // most `out.len()` bytes into `out`, an array we hold by `&mut`, and
        // fails on a bad `src`, leaving the empty name written above.
        let _ = unsafe { bpf_probe_read_kernel_str_bytes(src as *const u8, out) };
    }
}

/// The table or chain name (and an nf_tables chain's table name) of the
/// object `obj`, as the site's layout says; empty when there is none.
#[inline(always)]
fn read_names(site: usize, obj: u64, name: &mut [u8; NAME_LEN], table: &mut [u8; NAME_LEN]) {
    name[0] = 0;
    table[0] = 0;
    // LLVM knows a SiteId is below SITE_COUNT and drops the check; the
    // verifier does not, so the index is read through a volatile load to
    // keep the bound check it needs.
    // SAFETY: `&site` is a reference to a live local usize, valid and
    // aligned for the read.
    let site = unsafe { core::ptr::read_volatile(&site) };
    if obj == 0 || site >= SITE_COUNT {
        return;
    }
    let layout = &config().sites[site];
    read_name(obj + layout.name_off as u64, layout.name_is_ptr, name);
    if layout.table_ptr_off != NO_OFFSET {
        let t = read_u64(obj + layout.table_ptr_off as u64);
        if t != 0 {
            read_name(t + layout.table_name_off as u64, layout.table_name_is_ptr, table);
        }
    }
}

/// Packet, hook state, hook, family and namespace of one call, as the
/// site's layout says.
struct Attribution {
    skb: u64,
    state: u64,
    hook: u8,
    pf: u8,
    netns: u32,
}

/// `parent` is the enclosing open call on this CPU, if any: when it had the
/// same hook state, its hook, family and namespace are this call's too, and
/// the four kernel reads that find them are skipped.
#[inline(always)]
fn attribute<A: Args>(ctx: &A, site: usize, parent: Option<&Frame>) -> Attribution {
    let cfg = config();
    let layout = &cfg.sites[site];
    let mut skb = 0;
    let mut state = 0;
    if layout.pkt_arg != NO_ARG {
        let pkt = ctx.arg_at(layout.pkt_arg);
        if pkt != 0 {
            skb = read_u64(pkt + layout.pkt_skb_off as u64);
            state = read_u64(pkt + layout.pkt_state_off as u64);
        }
    }
    if layout.skb_arg != NO_ARG {
        skb = ctx.arg_at(layout.skb_arg);
    }
    if layout.state_arg != NO_ARG {
        state = ctx.arg_at(layout.state_arg);
    }
    let mut hook = HOOK_UNKNOWN;
    let mut pf = 0;
    let mut netns = 0;
    if let Some(p) = parent.filter(|p| state != 0 && p.state == state) {
        hook = p.hook;
        pf = p.pf;
        netns = p.netns;
    } else if state != 0 && cfg.state_hook_off != NO_OFFSET {
        if cfg.state_pf_off == cfg.state_hook_off + 1 {
            // Adjacent (they are, in every kernel so far): one read for both.
            // SAFETY: a kernel memory read (module header) of the two bytes
            // at `hook` in the call's `nf_hook_state`; a bad address fails
            // and reads as an unknown hook; any 2 bytes are a valid u16.
            let both: u16 = unsafe { bpf_probe_read_kernel((state + cfg.state_hook_off as u64) as *const u16) }
                .unwrap_or(u16::from_le_bytes([HOOK_UNKNOWN, 0]));
            [hook, pf] = both.to_le_bytes();
        } else {
            hook = read_u8(state + cfg.state_hook_off as u64);
            pf = read_u8(state + cfg.state_pf_off as u64);
        }
        if cfg.state_net_off != NO_OFFSET {
            let net = read_u64(state + cfg.state_net_off as u64);
            if net != 0 {
                netns = read_u32(net + cfg.net_inum_off as u64);
            }
        }
    }
    if layout.hook_value_arg != NO_ARG {
        hook = ctx.arg_at(layout.hook_value_arg) as u8;
    }
    Attribution { skb, state, hook, pf, netns }
}

#[inline(always)]
fn on_entry<A: Args + EbpfContext>(ctx: &A, site: SiteId) -> u32 {
    let Some(stack) = CALL_STACK.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's CALL_STACK slot (per-CPU map slots, module header);
    // the one reference to it in this run. Frames are reached through
    // `frame_at`, whose mask keeps the index below MAX_DEPTH.
    let stack = unsafe { &mut *stack };
    let mut depth = stack.depth as usize;
    if depth >= MAX_DEPTH {
        // A full stack whose newest frame is older than any probed call can
        // last holds only frames whose exits will never come (an exit probe
        // missed or not yet attached): drop them, counted, rather than stay
        // full and leave every later call on this CPU unmatched. Checked
        // only here, so a call in the normal path reads no extra clock.
        let top = frame_at(&mut stack.frames, MAX_DEPTH - 1).start_ns;
        // SAFETY: a helper with no arguments.
        let now = unsafe { bpf_ktime_get_ns() };
        if now.saturating_sub(top) > STALE_FRAME_NS {
            count_n(Counter::OrphanedFrames, MAX_DEPTH as u64);
            depth = 0;
        }
    }
    if depth >= MAX_DEPTH {
        count(Counter::DepthOverflows);
        // Rare and worth a line with the details: which site nested too
        // deep. Sent through aya-log's own ring, never the events ring.
        warn!(ctx, "call stack full ({} frames): site {} not timed", MAX_DEPTH, site as u32);
        return 0;
    }
    let site_idx = site as usize;
    if site_idx >= SITE_COUNT {
        return 0;
    }
    let parent = if depth > 0 { Some(&*frame_at(&mut stack.frames, depth - 1)) } else { None };
    let mut at = attribute(ctx, site_idx, parent);
    // Calls without a hook state (ip_vs_schedule) run inside one that has
    // it (the IPVS hook): inherit the enclosing call's hook and namespace.
    if at.hook == HOOK_UNKNOWN && depth > 0 {
        let parent = frame_at(&mut stack.frames, depth - 1);
        at.hook = parent.hook;
        at.pf = parent.pf;
        at.netns = parent.netns;
        if at.skb == 0 {
            at.skb = parent.skb;
        }
    }
    let cfg = config();
    let layout = &cfg.sites[site_idx];
    let frame = frame_at(&mut stack.frames, depth);
    frame.site = site as u16;
    frame.children = 0;
    frame.descendants = 0;
    frame.skb = at.skb;
    frame.state = at.state;
    frame.hook = at.hook;
    frame.pf = at.pf;
    frame.netns = at.netns;
    frame.child_ns = 0;
    frame.transmit_ns = 0;
    frame.name_obj = if layout.name_obj_arg != NO_ARG { ctx.arg_at(layout.name_obj_arg) } else { 0 };
    // Events carry the names; aggregates read them once per key, at exit.
    if cfg.emit_events != 0 {
        read_names(site_idx, frame.name_obj, &mut frame.name, &mut frame.table);
    }
    stack.depth = (depth + 1) as u32;
    stack.entries += 1;
    // Take the time last, so the work above is not charged to the call.
    // SAFETY: bpf_ktime_get_ns takes no argument and touches no memory of
    // ours (aya marks every helper unsafe).
    frame.start_ns = unsafe { bpf_ktime_get_ns() };
    0
}

/// `skb` is the packet seen by the exit program, when it can see one
/// (fexit); 0 when it cannot (kretprobe), then only the site id is checked.
#[inline(always)]
fn on_exit<C: EbpfContext>(ctx: &C, site: SiteId, skb: u64, ret: i64) -> u32 {
    // SAFETY: bpf_ktime_get_ns takes no argument and touches no memory of ours.
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(stack) = CALL_STACK.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's CALL_STACK slot (per-CPU map slots, module header),
    // the same one the entry program pushed on; the one reference to it in
    // this run, indexed only through `frame_at`'s mask.
    let stack = unsafe { &mut *stack };
    let depth = stack.depth as usize;
    if depth == 0 || depth > MAX_DEPTH {
        count(Counter::UnmatchedExits);
        return 0;
    }
    // The matching entry is normally on top. If it is further down, the
    // frames above it lost their exits (e.g. kretprobe misses) and are
    // discarded; if it is nowhere, this exit is unmatched.
    let mut found = MAX_DEPTH;
    let mut i = 0;
    while i < MAX_DEPTH {
        if i < depth {
            let idx = (depth - 1 - i) & (MAX_DEPTH - 1);
            let f = frame_at(&mut stack.frames, idx);
            if f.site == site as u16 && (skb == 0 || f.skb == 0 || f.skb == skb) {
                found = idx;
                break;
            }
        }
        i += 1;
    }
    if found >= MAX_DEPTH {
        count(Counter::UnmatchedExits);
        return 0;
    }
    let orphans = (depth - 1 - found) as u64;
    if orphans > 0 {
        count_n(Counter::OrphanedFrames, orphans);
        warn!(ctx, "site {} exit: dropped {} open frames whose exits never came", site as u32, orphans);
    }
    stack.depth = found as u32;
    // Only the fields the parent needs are copied out: the frame itself
    // (128 bytes) stays where it is, popped but intact, and is recorded from
    // there.
    let (start_ns, child_ns, transmit_ns, descendants) = {
        let f = frame_at(&mut stack.frames, found);
        (f.start_ns, f.child_ns, f.transmit_ns, f.descendants)
    };
    if now < start_ns {
        count(Counter::NegativeDurations);
        return 0;
    }
    let duration = now - start_ns;
    let self_ns = duration.saturating_sub(child_ns);
    if found > 0 {
        let parent = frame_at(&mut stack.frames, found - 1);
        parent.child_ns += duration;
        // A transmit's whole time, or the transmits nested deeper: what the
        // enclosing hook did after it had found the backend.
        parent.transmit_ns += if site as u16 == SiteId::IpvsXmit as u16 { duration } else { transmit_ns };
        parent.children = parent.children.saturating_add(1);
        parent.descendants = parent.descendants.saturating_add(descendants).saturating_add(1);
    }
    stack.matched += 1;

    record_call(site, frame_at(&mut stack.frames, found), duration, self_ns, ret, found as u8);
    0
}

/// Aggregating: adds one completed call to its key's log-linear histogram
/// (which userspace also folds into the per-site log2 view). Otherwise:
/// adds it to the per-site log2 histogram and, room allowing, sends it to
/// userspace.
#[inline(always)]
fn record_call(site: SiteId, frame: &Frame, duration: u64, self_ns: u64, ret: i64, depth: u8) {
    if config().emit_events == 0 {
        aggregate(site, frame, duration, self_ns, ret);
        return;
    }
    if let Some(h) = HISTOGRAMS.get_ptr_mut(histogram_index(site as u32, frame.hook)) {
        // SAFETY: this CPU's slot of the per-CPU HISTOGRAMS array (per-CPU map
        // slots, module header); `histogram_index` can exceed the array only
        // for a bad site, and then the lookup returns None instead.
        let h = unsafe { &mut *h };
        let bucket = log2(duration);
        let bucket = if bucket >= HIST_BUCKETS { HIST_BUCKETS - 1 } else { bucket };
        h.buckets[bucket] += 1;
        h.count += 1;
        h.sum_ns += duration;
        h.self_sum_ns += self_ns;
        if duration > h.max_ns {
            h.max_ns = duration;
        }
    }

    // Calibration calls send events too: the ring submission is part of
    // what a probe pair costs. (Userspace sizes calibration to fit the ring
    // and discards those events.)
    match EVENTS.reserve::<CallEvent>(0) {
        Some(mut entry) => {
            let ev = entry.as_mut_ptr();
            // SAFETY: `ev` points to a ring buffer record of
            // size_of::<CallEvent>() bytes that `reserve` gave this program
            // alone until it submits it; fields are written through the raw
            // pointer (no reference to the uninitialised record is made), and
            // every field, padding included, is written, so no stale kernel
            // byte reaches userspace. bpf_get_smp_processor_id has no
            // preconditions.
            unsafe {
                (*ev).duration_ns = duration;
                (*ev).self_ns = self_ns;
                (*ev).skb = frame.skb;
                (*ev).start_ns = frame.start_ns;
                (*ev).transmit_ns = frame.transmit_ns;
                (*ev).ret = ret as i32;
                (*ev).site = site as u32;
                (*ev).cpu = bpf_get_smp_processor_id();
                (*ev).children = frame.children;
                (*ev).descendants = frame.descendants;
                (*ev).hook = frame.hook;
                (*ev).pf = frame.pf;
                (*ev).depth = depth;
                (*ev)._pad = 0;
                (*ev).netns = frame.netns;
                (*ev).name = frame.name;
                (*ev).table = frame.table;
            }
            // No wakeup per event: waking the reader costs more than the
            // probe itself and lands in the measured path; userspace polls.
            entry.submit(BPF_RB_NO_WAKEUP);
        }
        None => count(Counter::RingReserveFailures),
    }
}

/// Adds one call to its key's log-linear histogram on this CPU; a new key
/// gets its names read into `NAMES` (once, whichever CPU sees it first).
#[inline(always)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "by value, the map helpers would copy keys and values onto the 512-byte BPF stack first \
              (an AggregateHistogram alone is 3.9 KiB)"
)]
fn aggregate(site: SiteId, frame: &Frame, duration: u64, self_ns: u64, ret: i64) {
    let key = AggregateKey {
        site: site as u16,
        hook: frame.hook,
        pf: frame.pf,
        netns: frame.netns,
        ret: if site as u16 == SiteId::IpvsIn as u16 { ret as i32 } else { 0 },
        _pad: 0,
        name_obj: frame.name_obj,
    };
    let h = match AGGREGATES.get_ptr_mut(&key) {
        Some(h) => h,
        None => {
            if frame.name_obj != 0 {
                let mut names = CallNames { name: [0; NAME_LEN], table: [0; NAME_LEN] };
                read_names(site as usize, frame.name_obj, &mut names.name, &mut names.table);
                // Full or already there: either way the call is still counted.
                let _ = NAMES.insert(&frame.name_obj, &names, BPF_NOEXIST);
            }
            let Some(zero) = ZERO_AGGREGATE.get_ptr(0) else { return };
            // SAFETY: this CPU's slot of ZERO_AGGREGATE (per-CPU map slots,
            // module header), which no program ever writes: a shared
            // reference to all-zero integers, read once by the insert.
            let inserted = AGGREGATES.insert(&key, unsafe { &*zero }, BPF_NOEXIST);
            match (inserted, AGGREGATES.get_ptr_mut(&key)) {
                (_, Some(h)) => h,
                _ => {
                    count(Counter::AggregateOverflows);
                    return;
                }
            }
        }
    };
    // SAFETY: this CPU's value of a per-CPU hash entry, from a lookup that
    // returned it (per-CPU map slots, module header). Userspace only reads
    // this map and never deletes a key, and its elements are preallocated,
    // so the value's memory stays valid for the run; the bucket index is
    // checked against LOG_LINEAR_BUCKETS before use.
    let h = unsafe { &mut *h };
    let bucket = log_linear_index(duration);
    if bucket < LOG_LINEAR_BUCKETS {
        h.buckets[bucket] += 1;
    }
    h.count += 1;
    h.sum_ns += duration;
    h.self_sum_ns += self_ns;
    h.descendants_sum += u64::from(frame.descendants);
    h.children_sum += u64::from(frame.children);
    if duration > h.max_ns {
        h.max_ns = duration;
    }
}

// The tracepoint bracket. On one CPU, a packet received from the device
// runs netif_receive_skb, the PREROUTING hooks, then the input route
// lookup, all in one softirq: the time between the two tracepoints
// encloses the hooks. Packets are matched by CPU and ingress ifindex.

/// The interface index and namespace inode of `dev` (a `struct net_device *`).
#[inline(always)]
fn device(dev: u64) -> (u32, u32) {
    let cfg = &config().bracket;
    let ifindex = read_u32(dev + cfg.dev_ifindex_off as u64);
    let net = read_u64(dev + cfg.dev_net_off as u64);
    let netns = if net != 0 { read_u32(net + config().net_inum_off as u64) } else { 0 };
    (ifindex, netns)
}

/// The ingress device and namespace of a received skb, when they are the
/// ones the spans time.
#[inline(always)]
fn ingress_match(skb: u64) -> Option<(u32, u32)> {
    let cfg = &config().bracket;
    if skb == 0 || cfg.skb_dev_off == NO_OFFSET {
        return None;
    }
    let dev = read_u64(skb + cfg.skb_dev_off as u64);
    if dev == 0 {
        return None;
    }
    let (ifindex, netns) = device(dev);
    // Loopback (ifindex 1) is never a node's ingress.
    if (cfg.ifindex != 0 && ifindex != cfg.ifindex) || (cfg.ifindex == 0 && ifindex == 1) {
        return None;
    }
    if cfg.netns != 0 && netns != cfg.netns {
        return None;
    }
    Some((ifindex, netns))
}

/// Starts a span on this CPU: a packet that was open and never closed is
/// counted as unclosed and replaced.
#[inline(always)]
fn open_span(slot: &PerCpuArray<OpenBracket>, skb: u64, ifindex: u32, netns: u32, opened: Counter, unclosed: Counter) {
    let Some(open) = slot.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's OPEN_BRACKET or OPEN_TRANSIT slot (per-CPU map slots,
    // module header); only raw tracepoint programs use these, and the kernel
    // runs one at a time per CPU.
    let open = unsafe { &mut *open };
    if open.skb != 0 {
        count(unclosed);
    }
    count(opened);
    open.skb = skb;
    open.ifindex = ifindex;
    open.netns = netns;
    // SAFETY: bpf_ktime_get_ns takes no argument and touches no memory of ours.
    open.start_ns = unsafe { bpf_ktime_get_ns() };
}

/// Records a closed span as one call of `site` at PREROUTING (IPv4).
#[inline(always)]
fn close_span(site: SiteId, open: &mut OpenBracket, now: u64) {
    let frame = Frame {
        start_ns: open.start_ns,
        child_ns: 0,
        skb: open.skb,
        transmit_ns: 0,
        site: site as u16,
        children: 0,
        descendants: 0,
        hook: 0, // NF_INET_PRE_ROUTING: both spans start before it
        pf: 2,   // NFPROTO_IPV4
        netns: open.netns,
        _pad: 0,
        state: 0,
        name_obj: 0,
        name: [0; NAME_LEN],
        table: [0; NAME_LEN],
    };
    open.skb = 0;
    let duration = now.saturating_sub(frame.start_ns);
    record_call(site, &frame, duration, duration, 0, 0);
}

/// `TP_PROTO(struct sk_buff *skb)`
#[raw_tracepoint(tracepoint = "netif_receive_skb")]
pub fn bracket_open(ctx: RawTracePointContext) -> u32 {
    let skb: u64 = ctx.arg(0);
    if let Some((ifindex, netns)) = ingress_match(skb) {
        open_span(&OPEN_BRACKET, skb, ifindex, netns, Counter::BracketsOpened, Counter::BracketsUnclosed);
    }
    0
}

/// `TP_PROTO(u32 tb_id, const struct flowi4 *flp, const struct fib_nh_common *nhc, int err)`
#[raw_tracepoint(tracepoint = "fib_table_lookup")]
pub fn bracket_close(ctx: RawTracePointContext) -> u32 {
    // SAFETY: bpf_ktime_get_ns takes no argument and touches no memory of ours.
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(open) = OPEN_BRACKET.get_ptr_mut(0) else { return 0 };
    // SAFETY: this CPU's OPEN_BRACKET slot (per-CPU map slots, module header),
    // shared only with `bracket_open`, another raw tracepoint program, which
    // the kernel does not run on this CPU while this one runs.
    let open = unsafe { &mut *open };
    if open.skb == 0 {
        return 0;
    }
    let cfg = &config().bracket;
    let flp: u64 = ctx.arg(1);
    // Only the input lookup for the bracketed packet's device closes it.
    if flp == 0 || read_u32(flp + cfg.flowi4_iif_off as u64) != open.ifindex {
        return 0;
    }
    count(Counter::BracketsClosed);
    close_span(SiteId::Bracket, open, now);
    0
}

// Transit. A forwarded packet is received on the client-facing device and,
// in the same softirq on the same CPU, transmitted on the backend-facing
// one, whichever hook (PREROUTING DNAT, or IPVS at LOCAL_IN) found its
// backend. The skb pointer is the same object on both sides (forwarding and
// IPVS NAT rewrite it in place), so it identifies the packet.

/// `TP_PROTO(struct sk_buff *skb)`
#[raw_tracepoint(tracepoint = "netif_receive_skb")]
pub fn transit_arrive(ctx: RawTracePointContext) -> u32 {
    if config().bracket.egress_ifindex == 0 {
        return 0;
    }
    let skb: u64 = ctx.arg(0);
    if let Some((ifindex, netns)) = ingress_match(skb) {
        open_span(&OPEN_TRANSIT, skb, ifindex, netns, Counter::TransitsOpened, Counter::TransitsUnclosed);
    }
    0
}

/// `TP_PROTO(const struct sk_buff *skb, const struct net_device *dev)`
#[raw_tracepoint(tracepoint = "net_dev_start_xmit")]
pub fn transit_depart(ctx: RawTracePointContext) -> u32 {
    // SAFETY: bpf_ktime_get_ns takes no argument and touches no memory of ours.
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(open) = OPEN_TRANSIT.get_ptr_mut(0) else { return 0 };
    // SAFETY: this CPU's OPEN_TRANSIT slot (per-CPU map slots, module header),
    // shared only with `transit_arrive`, another raw tracepoint program,
    // which the kernel does not run on this CPU while this one runs.
    let open = unsafe { &mut *open };
    let skb: u64 = ctx.arg(0);
    if open.skb == 0 || skb != open.skb {
        return 0;
    }
    let dev: u64 = ctx.arg(1);
    if dev == 0 {
        return 0;
    }
    let (ifindex, netns) = device(dev);
    if ifindex != config().bracket.egress_ifindex || netns != open.netns {
        return 0;
    }
    count(Counter::TransitsClosed);
    close_span(SiteId::Transit, open, now);
    0
}

/// Declares the four programs of one site. Program names are
/// `<flavour>_<site>`; userspace looks them up by these names.
macro_rules! site_programs {
    ($site:expr, $kp:ident, $krp:ident, $fe:ident, $fx:ident) => {
        #[kprobe]
        pub fn $kp(ctx: ProbeContext) -> u32 {
            on_entry(&ctx, $site)
        }

        #[kretprobe]
        pub fn $krp(ctx: RetProbeContext) -> u32 {
            on_exit(&ctx, $site, 0, ctx.ret::<i64>())
        }

        #[fentry]
        pub fn $fe(ctx: FEntryContext) -> u32 {
            on_entry(&ctx, $site)
        }

        #[fexit]
        pub fn $fx(ctx: FExitContext) -> u32 {
            let layout = &config().sites[$site as usize];
            let skb = if layout.skb_arg != NO_ARG { ctx.arg_at(layout.skb_arg) } else { 0 };
            let ret = ctx.ret::<i64>().unwrap_or(0);
            on_exit(&ctx, $site, skb, ret)
        }
    };
}

site_programs!(SiteId::NfHookSlow, kprobe_nf_hook_slow, kretprobe_nf_hook_slow, fentry_nf_hook_slow, fexit_nf_hook_slow);
site_programs!(SiteId::IptDoTable, kprobe_ipt_do_table, kretprobe_ipt_do_table, fentry_ipt_do_table, fexit_ipt_do_table);
site_programs!(SiteId::NftDoChain, kprobe_nft_do_chain, kretprobe_nft_do_chain, fentry_nft_do_chain, fexit_nft_do_chain);
site_programs!(SiteId::IpvsIn, kprobe_ipvs_in, kretprobe_ipvs_in, fentry_ipvs_in, fexit_ipvs_in);
site_programs!(SiteId::IpvsSchedule, kprobe_ipvs_schedule, kretprobe_ipvs_schedule, fentry_ipvs_schedule, fexit_ipvs_schedule);
site_programs!(SiteId::IpvsConnInGet, kprobe_ipvs_conn_in_get, kretprobe_ipvs_conn_in_get, fentry_ipvs_conn_in_get, fexit_ipvs_conn_in_get);
site_programs!(SiteId::IpvsXmit, kprobe_ipvs_xmit, kretprobe_ipvs_xmit, fentry_ipvs_xmit, fexit_ipvs_xmit);
site_programs!(SiteId::Calibration, kprobe_calibration, kretprobe_calibration, fentry_calibration, fexit_calibration);

// The floor: entry/exit programs that only return. Attached to the same
// functions with the same mechanism as the sites, they cost what the
// mechanism itself costs (the trampoline or the kprobe trap and the
// kretprobe's return hijack), which no tracer using it can go below;
// `pathcost bench` sets pathcost and bpftrace against it. A kprobe program
// attaches to any number of functions; an fentry program is loaded for one
// target, so it exists per site that fentry can reach (vmlinux functions).

#[kprobe]
pub fn kprobe_floor(_ctx: ProbeContext) -> u32 {
    0
}

#[kretprobe]
pub fn kretprobe_floor(_ctx: RetProbeContext) -> u32 {
    0
}

#[fentry]
pub fn fentry_floor_nf_hook_slow(_ctx: FEntryContext) -> u32 {
    0
}

#[fexit]
pub fn fexit_floor_nf_hook_slow(_ctx: FExitContext) -> u32 {
    0
}
