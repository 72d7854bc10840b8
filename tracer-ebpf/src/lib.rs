//! Types shared by pathcost's eBPF programs and its userspace loader.
//!
//! Both sides compile this file: the programs for `bpfel-unknown-none`, the
//! loader for the host with the `user` feature, which adds `aya::Pod`. Every
//! type is `#[repr(C)]` with explicit padding and a compile-time size check,
//! so a layout change on one side cannot silently misread the other.

#![no_std]

// The toolchain module runs in build scripts and xtask, on the host, with std.
#[cfg(not(target_arch = "bpf"))]
extern crate std;

/// The pinned toolchain that builds these programs (for build scripts and xtask).
#[cfg(not(target_arch = "bpf"))]
pub mod toolchain;

/// Deepest nesting of probed calls tracked per CPU. IPVS in NAT mode
/// transmits from inside its input hook, so LOCAL_OUT and POST_ROUTING hooks
/// (and their table walks) nest inside `ip_vs_in_hook`; with a peer's receive
/// softirq on top that is about 8 deep. 16 leaves room; overflows are counted.
pub const MAX_DEPTH: usize = 16;

/// Bytes of a table or chain name kept per event (`XT_TABLE_MAXNAMELEN` is 32).
pub const NAME_LEN: usize = 32;

/// Buckets of the in-kernel log2 histogram: bucket `i` counts durations in
/// `[2^i, 2^(i+1))` ns; the last bucket takes everything above.
pub const HIST_BUCKETS: usize = 40;

/// A probed kernel function. The discriminant is the index used in every
/// per-site array on both sides.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SiteId {
    /// Runs all hook functions registered at one netfilter hook for one packet.
    NfHookSlow = 0,
    /// iptables-legacy table walk.
    IptDoTable = 1,
    /// nf_tables base chain walk (iptables-nft and kube-proxy's nftables mode).
    NftDoChain = 2,
    /// IPVS input hook (`ip_vs_in_hook`, or `ip_vs_in` on kernels before 5.16).
    IpvsIn = 3,
    /// IPVS scheduler choosing a real server for a new connection.
    IpvsSchedule = 4,
    /// IPVS connection-table lookup.
    IpvsConnInGet = 5,
    /// The calibration target used to measure the probes' own cost.
    Calibration = 6,
    /// Tracepoint bracket: `net:netif_receive_skb` on the ingress device to
    /// the next `fib:fib_table_lookup` for it on the same CPU, which
    /// encloses the PREROUTING hooks. For kernels without kprobes/fentry.
    Bracket = 7,
    /// Tracepoint transit: `net:netif_receive_skb` on the node's
    /// client-facing device to `net:net_dev_start_xmit` of the same skb on
    /// its backend-facing device. The one span every mode's forwarding
    /// covers, whatever hook finds the service.
    Transit = 8,
    /// IPVS transmit (`ip_vs_nat_xmit`): runs inside the IPVS input hook,
    /// so it is timed as a nested site and excluded from the hook's lookup.
    IpvsXmit = 9,
}

pub const SITE_COUNT: usize = 10;

impl SiteId {
    pub const ALL: [SiteId; SITE_COUNT] = [
        SiteId::NfHookSlow,
        SiteId::IptDoTable,
        SiteId::NftDoChain,
        SiteId::IpvsIn,
        SiteId::IpvsSchedule,
        SiteId::IpvsConnInGet,
        SiteId::Calibration,
        SiteId::Bracket,
        SiteId::Transit,
        SiteId::IpvsXmit,
    ];

    pub const fn from_u32(v: u32) -> Option<SiteId> {
        if (v as usize) < SITE_COUNT {
            Some(Self::ALL[v as usize])
        } else {
            None
        }
    }
}

/// "Not available" for the `i8` argument indexes in [`SiteLayout`].
pub const NO_ARG: i8 = -1;
/// "Not available" for the `i16` field offsets in [`SiteLayout`].
pub const NO_OFFSET: i16 = -1;

/// Where a probe finds what it attributes a call to, for one site on the
/// running kernel. Filled by userspace from BTF at load time (for example
/// `ipt_do_table`'s first parameter is `priv` since 5.16 and `skb` before),
/// so no struct layout or argument order is compiled into the programs.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SiteLayout {
    /// Argument holding `struct sk_buff *`, or [`NO_ARG`].
    pub skb_arg: i8,
    /// Argument holding `struct nf_hook_state *`, or [`NO_ARG`].
    pub state_arg: i8,
    /// Argument holding the hook number as a plain integer (old `ip_vs_in`).
    pub hook_value_arg: i8,
    /// Argument holding `struct nft_pktinfo *`; skb and state are read
    /// through it with `pkt_skb_off` / `pkt_state_off`.
    pub pkt_arg: i8,
    /// Argument holding the object that names the table or chain
    /// (`struct xt_table *` or `struct nft_chain *`), or [`NO_ARG`].
    pub name_obj_arg: i8,
    /// Non-zero when the name at `name_off` is a `char *` (nft_chain.name)
    /// rather than an inline array (xt_table.name).
    pub name_is_ptr: u8,
    /// Non-zero when the table name at `table_name_off` is a `char *`.
    pub table_name_is_ptr: u8,
    pub _pad0: u8,
    pub pkt_skb_off: i16,
    pub pkt_state_off: i16,
    /// Offset of the name inside the name object.
    pub name_off: i16,
    /// Offset of the `struct nft_table *` inside the name object, or [`NO_OFFSET`].
    pub table_ptr_off: i16,
    /// Offset of the name inside `struct nft_table`.
    pub table_name_off: i16,
    pub _pad1: i16,
}

impl SiteLayout {
    /// A site whose calls carry no attribution (timed, but not named).
    pub const NONE: SiteLayout = SiteLayout {
        skb_arg: NO_ARG,
        state_arg: NO_ARG,
        hook_value_arg: NO_ARG,
        pkt_arg: NO_ARG,
        name_obj_arg: NO_ARG,
        name_is_ptr: 0,
        table_name_is_ptr: 0,
        _pad0: 0,
        pkt_skb_off: NO_OFFSET,
        pkt_state_off: NO_OFFSET,
        name_off: NO_OFFSET,
        table_ptr_off: NO_OFFSET,
        table_name_off: NO_OFFSET,
        _pad1: 0,
    };
}

/// The programs' one global: per-site layouts plus offsets inside
/// `struct nf_hook_state`. Written by userspace before load.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProbeConfig {
    pub sites: [SiteLayout; SITE_COUNT],
    /// Offset of `hook` (u8) in `struct nf_hook_state`.
    pub state_hook_off: i16,
    /// Offset of `pf` (u8) in `struct nf_hook_state`.
    pub state_pf_off: i16,
    /// Offset of `net` (`struct net *`) in `struct nf_hook_state`.
    pub state_net_off: i16,
    /// Offset of `ns.inum` (u32) in `struct net`: the namespace's inode.
    pub net_inum_off: i16,
    /// Non-zero: send one [`CallEvent`] per call through the ring buffer.
    /// Zero: aggregate in the kernel instead (log-linear histograms per
    /// [`AggregateKey`], from which userspace also folds the per-site log2
    /// view); the counters are kept either way.
    pub emit_events: u32,
    pub bracket: BracketConfig,
}

/// What the tracepoint spans (bracket and transit) need: where to find the
/// device and its namespace from an skb, and which packets to time.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BracketConfig {
    /// Offset of `dev` (`struct net_device *`) in `struct sk_buff`.
    pub skb_dev_off: i16,
    /// Offset of `ifindex` (int) in `struct net_device`.
    pub dev_ifindex_off: i16,
    /// Offset of `nd_net.net` (`struct net *`) in `struct net_device`.
    pub dev_net_off: i16,
    /// Offset of `__fl_common.flowic_iif` (int) in `struct flowi4`.
    pub flowi4_iif_off: i16,
    /// Only packets arriving on this interface (0: any but loopback).
    pub ifindex: u32,
    /// Only packets in this network namespace (inode; 0: any).
    pub netns: u32,
    /// Transit: the device a forwarded packet leaves by (0: transit off).
    pub egress_ifindex: u32,
    pub _pad: u32,
}

impl BracketConfig {
    pub const EMPTY: BracketConfig = BracketConfig {
        skb_dev_off: NO_OFFSET,
        dev_ifindex_off: NO_OFFSET,
        dev_net_off: NO_OFFSET,
        flowi4_iif_off: NO_OFFSET,
        ifindex: 0,
        netns: 0,
        egress_ifindex: 0,
        _pad: 0,
    };
}

/// A bracket opened on one CPU by `netif_receive_skb`, waiting for the
/// route lookup that closes it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OpenBracket {
    pub skb: u64,
    pub start_ns: u64,
    pub ifindex: u32,
    pub netns: u32,
}

impl ProbeConfig {
    pub const EMPTY: ProbeConfig = ProbeConfig {
        sites: [SiteLayout::NONE; SITE_COUNT],
        state_hook_off: NO_OFFSET,
        state_pf_off: NO_OFFSET,
        state_net_off: NO_OFFSET,
        net_inum_off: NO_OFFSET,
        emit_events: 1,
        bracket: BracketConfig::EMPTY,
    };
}

/// Hook value when the call carries no `nf_hook_state`.
pub const HOOK_UNKNOWN: u8 = 0xff;

/// One entry of the per-CPU call stack: an entry waiting for its exit.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Frame {
    pub start_ns: u64,
    /// Time spent in probed calls nested inside this one (for self time).
    pub child_ns: u64,
    pub skb: u64,
    /// Time spent in nested transmit sites ([`SiteId::IpvsXmit`]), at any
    /// depth: the forwarding a hook does from inside itself.
    pub transmit_ns: u64,
    pub site: u16,
    /// Probed calls that completed directly inside this one.
    pub children: u16,
    /// Probed calls that completed anywhere inside this one (children,
    /// grandchildren, ...): each added one probe pair's cost to this call.
    pub descendants: u16,
    pub hook: u8,
    pub pf: u8,
    /// Inode of the packet's network namespace (0 when unknown).
    pub netns: u32,
    pub _pad: u32,
    /// The call's `struct nf_hook_state *` (0 if none): a call nested in
    /// one with the same state (a table walk inside its hook) takes the
    /// hook, family and namespace from it instead of reading them again.
    pub state: u64,
    /// The object naming the table or chain (aggregating: the names are
    /// read once per key, not copied here at every entry).
    pub name_obj: u64,
    pub name: [u8; NAME_LEN],
    pub table: [u8; NAME_LEN],
}

/// Per-CPU LIFO of open calls. Keyed by CPU, never by pid: a softirq runs on
/// top of whatever task it interrupted, so receive-path hooks nest inside
/// unrelated calls of the same task.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CallStack {
    pub depth: u32,
    pub _pad: u32,
    /// Entries pushed on this CPU's stack.
    pub entries: u64,
    /// Exits matched with their entry on this CPU.
    pub matched: u64,
    pub frames: [Frame; MAX_DEPTH],
}

impl CallStack {
    /// No call open and nothing counted (what userspace writes to clear a
    /// CPU's stack once the probes are attached).
    pub const EMPTY: CallStack =
        CallStack { depth: 0, _pad: 0, entries: 0, matched: 0, frames: [Frame::EMPTY; MAX_DEPTH] };
}

impl Frame {
    pub const EMPTY: Frame = Frame {
        start_ns: 0,
        child_ns: 0,
        skb: 0,
        transmit_ns: 0,
        site: 0,
        children: 0,
        descendants: 0,
        hook: 0,
        pf: 0,
        netns: 0,
        _pad: 0,
        state: 0,
        name_obj: 0,
        name: [0; NAME_LEN],
        table: [0; NAME_LEN],
    };
}

/// One completed call, sent to userspace through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CallEvent {
    /// Inclusive duration: entry to exit.
    pub duration_ns: u64,
    /// Exclusive duration: inclusive minus the probed calls nested inside.
    pub self_ns: u64,
    pub skb: u64,
    /// Entry timestamp (CLOCK_MONOTONIC), to group calls of one packet.
    pub start_ns: u64,
    /// See [`Frame::transmit_ns`]: inclusive minus this is the lookup.
    pub transmit_ns: u64,
    /// Return value truncated to 32 bits (a netfilter verdict for hooks).
    pub ret: i32,
    pub site: u32,
    pub cpu: u32,
    /// See [`Frame::children`] and [`Frame::descendants`].
    pub children: u16,
    pub descendants: u16,
    pub hook: u8,
    pub pf: u8,
    /// Stack depth of this call (0 = outermost probed call on this CPU).
    pub depth: u8,
    pub _pad: u8,
    /// Inode of the packet's network namespace (0 when unknown).
    pub netns: u32,
    pub name: [u8; NAME_LEN],
    pub table: [u8; NAME_LEN],
}

/// Indexes of the per-CPU loss and bookkeeping counters. (Entries and
/// matched exits, counted at every call, live in [`CallStack`] instead: the
/// programs already hold it, so they cost no map lookup.)
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Exits with no matching entry on this CPU's stack.
    UnmatchedExits = 0,
    /// Entries dropped because the stack was full.
    DepthOverflows = 1,
    /// Frames discarded because an exit matched a frame below them (their
    /// own exit was lost, e.g. a kretprobe miss).
    OrphanedFrames = 2,
    /// Events the ring buffer had no room for (still counted in histograms).
    RingReserveFailures = 3,
    /// Exits whose clock went backwards (should stay 0).
    NegativeDurations = 4,
    /// Brackets opened by a matching `netif_receive_skb`.
    BracketsOpened = 5,
    /// Brackets closed by the packet's route lookup.
    BracketsClosed = 6,
    /// Brackets that never closed: the next packet on the CPU replaced them
    /// (the packet was dropped or consumed before routing).
    BracketsUnclosed = 7,
    /// Transits opened by a packet arriving on the client-facing device.
    TransitsOpened = 8,
    /// Transits closed by the same skb leaving on the backend-facing device.
    TransitsClosed = 9,
    /// Transits the next arriving packet replaced: the packet was not
    /// forwarded (dropped, delivered locally, or queued).
    TransitsUnclosed = 10,
    /// Calls not aggregated because the aggregate map was full (a new
    /// site × hook × table/chain × namespace key found no room).
    AggregateOverflows = 11,
}

pub const COUNTER_COUNT: usize = 12;

/// Per-CPU histogram slot for one site: log2 buckets plus running sums, so
/// counts survive even when the ring buffer overflows.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SiteHistogram {
    pub buckets: [u64; HIST_BUCKETS],
    pub count: u64,
    pub sum_ns: u64,
    pub self_sum_ns: u64,
    pub max_ns: u64,
}

/// Sub-buckets per power of two in the aggregating histograms: a bucket is
/// at most 1/16 of its value wide, so a percentile read at the bucket's
/// middle is within about 3% of the exact one.
pub const LOG_LINEAR_SUB_BITS: u32 = 4;
const LOG_LINEAR_SUB: usize = 1 << LOG_LINEAR_SUB_BITS;
/// Largest power of two with buckets of its own: 2^32 ns (4.3 s); longer
/// calls share the last bucket (and `max_ns` keeps the longest).
pub const LOG_LINEAR_TOP_POWER: usize = 32;
/// Values below 16 ns have a bucket each; above, 16 per power of two.
pub const LOG_LINEAR_BUCKETS: usize = (LOG_LINEAR_TOP_POWER - LOG_LINEAR_SUB_BITS as usize + 2) * LOG_LINEAR_SUB;

/// Integer log2 without a count-leading-zeros instruction (BPF has none);
/// 0 for 0.
#[inline(always)]
pub fn log2(mut v: u64) -> usize {
    let mut r = 0;
    if v >= 1 << 32 {
        v >>= 32;
        r += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        r += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        r += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        r += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        r += 2;
    }
    if v >= 1 << 1 {
        r += 1;
    }
    r
}

/// Log-linear bucket of a duration in ns: exact below 16, then the power of
/// two and the next four bits below the leading one.
#[inline(always)]
pub fn log_linear_index(v: u64) -> usize {
    if v < LOG_LINEAR_SUB as u64 {
        return v as usize;
    }
    let k = log2(v);
    let sub = ((v >> (k - LOG_LINEAR_SUB_BITS as usize)) as usize) & (LOG_LINEAR_SUB - 1);
    let i = (k - LOG_LINEAR_SUB_BITS as usize + 1) * LOG_LINEAR_SUB + sub;
    if i < LOG_LINEAR_BUCKETS { i } else { LOG_LINEAR_BUCKETS - 1 }
}

/// The values bucket `i` holds: `[low, low + width)` ns.
pub const fn log_linear_bounds(i: usize) -> (u64, u64) {
    if i < LOG_LINEAR_SUB {
        return (i as u64, 1);
    }
    let k = i / LOG_LINEAR_SUB + LOG_LINEAR_SUB_BITS as usize - 1;
    let sub = (i % LOG_LINEAR_SUB) as u64;
    let width = 1u64 << (k - LOG_LINEAR_SUB_BITS as usize);
    ((LOG_LINEAR_SUB as u64 + sub) * width, width)
}

/// What one aggregated row is about: site, hook, family, namespace, the
/// verdict (IPVS input hook only) and the object naming the table or chain,
/// by address: names are read once per new key (see [`CallNames`]), not
/// at every call.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AggregateKey {
    pub site: u16,
    pub hook: u8,
    pub pf: u8,
    pub netns: u32,
    /// Netfilter verdict for [`SiteId::IpvsIn`], else 0.
    pub ret: i32,
    pub _pad: u32,
    /// `struct xt_table *` or `struct nft_chain *` of the call, 0 if none.
    pub name_obj: u64,
}

/// Per-CPU histogram of one [`AggregateKey`]: log-linear buckets of the
/// inclusive time, plus sums from which means of self time and of the
/// corrections are computed.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AggregateHistogram {
    pub count: u64,
    pub sum_ns: u64,
    pub self_sum_ns: u64,
    pub max_ns: u64,
    /// Sums of [`Frame::descendants`] and [`Frame::children`]: each nested
    /// probed call added one probe pair to this call.
    pub descendants_sum: u64,
    pub children_sum: u64,
    pub buckets: [u64; LOG_LINEAR_BUCKETS],
}

/// A table or chain's names, read once per name object (see [`AggregateKey`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CallNames {
    pub name: [u8; NAME_LEN],
    pub table: [u8; NAME_LEN],
}

const _: () = assert!(core::mem::size_of::<SiteLayout>() == 20);
const _: () = assert!(core::mem::size_of::<Frame>() == 128);
const _: () = assert!(core::mem::size_of::<AggregateKey>() == 24);
const _: () = assert!(core::mem::size_of::<AggregateHistogram>() == (LOG_LINEAR_BUCKETS + 6) * 8);
const _: () = assert!(log_linear_bounds(LOG_LINEAR_BUCKETS - 1).0 < (1u64 << (LOG_LINEAR_TOP_POWER + 1)));
const _: () = assert!(core::mem::size_of::<CallEvent>() == 128);
const _: () = assert!(core::mem::size_of::<SiteHistogram>() == (HIST_BUCKETS + 4) * 8);
const _: () = assert!(MAX_DEPTH.is_power_of_two());
// No implicit padding in the types userspace reads or writes as bytes: each
// is the sum of its fields (an uninitialised padding byte would make
// `aya::Pod` unsound).
const _: () = assert!(core::mem::size_of::<BracketConfig>() == 4 * 2 + 4 * 4);
const _: () = assert!(
    core::mem::size_of::<ProbeConfig>()
        == SITE_COUNT * core::mem::size_of::<SiteLayout>() + 4 * 2 + 4 + core::mem::size_of::<BracketConfig>()
);
const _: () = assert!(core::mem::size_of::<CallStack>() == 3 * 8 + MAX_DEPTH * core::mem::size_of::<Frame>());
const _: () = assert!(core::mem::size_of::<CallNames>() == 2 * NAME_LEN);

#[cfg(feature = "user")]
mod pod {
    //! `aya::Pod`: the types userspace copies to and from maps and globals
    //! as bytes. Each is `#[repr(C)]` and `Copy`, has only integer (and
    //! integer array) fields, so every bit pattern is a valid value, and has
    //! no implicit padding (its size check above), so no byte is uninitialised.

    // SAFETY: integer fields, SiteLayout and BracketConfig (themselves integer
    // fields with explicit `_pad`s); no padding per the ProbeConfig size check.
    unsafe impl aya::Pod for super::ProbeConfig {}
    // SAFETY: integer and byte-array fields with an explicit `_pad`; exactly
    // 128 bytes per its size check, the sum of its fields.
    unsafe impl aya::Pod for super::CallEvent {}
    // SAFETY: u64 fields only, so no padding (size check: HIST_BUCKETS + 4 words).
    unsafe impl aya::Pod for super::SiteHistogram {}
    // SAFETY: integer fields with an explicit `_pad`; 24 bytes per its size
    // check, the sum of its fields. Used as a hash key, so no padding byte
    // may vary between two equal keys either.
    unsafe impl aya::Pod for super::AggregateKey {}
    // SAFETY: u64 fields only, so no padding (size check: LOG_LINEAR_BUCKETS + 6 words).
    unsafe impl aya::Pod for super::AggregateHistogram {}
    // SAFETY: two byte arrays, no padding (size check: 2 * NAME_LEN).
    unsafe impl aya::Pod for super::CallNames {}
    // SAFETY: u32 depth with an explicit `_pad`, two u64 counters and Frames
    // (integer fields, explicit `_pad`, 128 bytes each); no padding per its
    // size check.
    unsafe impl aya::Pod for super::CallStack {}
}

/// Histogram slots per site: the five `NF_INET_*` hooks plus one for calls
/// with no hook (IPVS scheduler, calibration).
pub const HOOK_SLOTS: usize = 6;

/// Index in the histogram map of (site, hook).
pub const fn histogram_index(site: u32, hook: u8) -> u32 {
    let slot = if (hook as usize) < HOOK_SLOTS - 1 { hook as u32 } else { (HOOK_SLOTS - 1) as u32 };
    site * HOOK_SLOTS as u32 + slot
}
