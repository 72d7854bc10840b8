//! How far pathcost's kprobe durations can be trusted: the same calls, in
//! the same run, timed by pathcost and by an independent bpftrace
//! kprobe/kretprobe script, for the three lookups pathcost exists to
//! measure, each with 3,000 services programmed:
//! - `ipt_do_table`, nat table at PRE_ROUTING (iptables-legacy mode);
//! - `nft_do_chain`, nat table's PREROUTING chain (iptables-nft mode);
//! - the IPVS input hook `ip_vs_in_hook` at LOCAL_IN (IPVS mode), which
//!   nests: its NAT transmit runs LOCAL_OUT hooks, itself included.
//!
//! Counts must be equal and the means within 10%. Runs in the VM on every
//! kernel (bpftrace is part of the image); skips with a reason on kernels
//! without kprobes.
//!
//! Who sees whose cost: probes on one address share one aggregated kprobe
//! whose handlers run newest first, and return handlers run last-in
//! first-out, so an instrument's span holds the whole entry/exit pair of
//! every instrument attached before it, and nothing of those attached
//! after. The run therefore attaches the same bpftrace script twice, then
//! pathcost, all on the same calls:
//! - the first bpftrace sees nothing of the others: the reference;
//! - the second holds one bpftrace pair more than the first, so their
//!   difference is what one bpftrace pair adds inside a span, measured on
//!   these very calls (timing a pair on another function, as pathcost's own
//!   calibration does, read it too low: the script's filter does real work
//!   here, and IPVS came out 13% high);
//! - pathcost holds two bpftrace pairs, which are taken off its mean.
//!
//! Comparing within one run keeps the machine's load (which moves TCG
//! timings by tens of percent between runs) out of the comparison.

use std::time::Duration;

use pathcost_tests::{bpftrace_skip_reason, bpftrace_stats, bpftrace_timed_calls, kprobe_skip_reason, skip, Bpftrace};
use tracer::{
    capabilities::btf::Btf,
    probes::{attach::AttachRequest, Backend, ProbeSite},
    synthesis::{
        cluster::{Cluster, ClusterSpec, Protocol, SplitMix64},
        ipvs::Scheduler,
        program::{program, Mode},
        topology::Topology,
        traffic::{self, Pace},
    },
    trace::{Session, SessionOptions},
};

const SERVICES: u32 = 3000;
/// Enough calls that both means are stable to a few percent under TCG.
const CONNECTIONS: u32 = 1000;

/// One comparison: a mode, pathcost's site and report row, and bpftrace's
/// probe on the same calls.
struct Comparison {
    mode: Mode,
    site: &'static str,
    hook: &'static str,
    table: &'static str,
    symbol: &'static str,
    /// Module whose BTF has the symbol's parameters.
    module: &'static str,
}

const IPTABLES_LEGACY: Comparison = Comparison {
    mode: Mode::IptablesLegacy,
    site: "ipt_do_table",
    hook: "PRE_ROUTING",
    table: "nat",
    symbol: "ipt_do_table",
    module: "ip_tables",
};
const IPTABLES_NFT: Comparison = Comparison {
    mode: Mode::IptablesNft,
    site: "nft_do_chain",
    hook: "PRE_ROUTING",
    table: "nat",
    symbol: "nft_do_chain",
    module: "nf_tables",
};
const IPVS: Comparison = Comparison {
    mode: Mode::Ipvs,
    site: "ip_vs_in",
    hook: "LOCAL_IN",
    table: "",
    symbol: "ip_vs_in_hook",
    module: "ip_vs",
};

/// NF_INET_PRE_ROUTING and NF_INET_LOCAL_IN; NFPROTO_IPV4.
const PRE_ROUTING: u32 = 0;
const LOCAL_IN: u32 = 1;
const IPV4: u32 = 2;

fn btf(module: &str) -> Btf {
    let vmlinux = Btf::vmlinux().expect("vmlinux BTF");
    Btf::module(module, &vmlinux).unwrap_or_else(|e| panic!("BTF of {module}: {e}"))
}

/// The parameter names of `symbol`, from its module's BTF: the script below
/// reads arguments by position, and positions have moved (ipt_do_table's
/// table went from third to first in 5.16).
fn param_names(module: &Btf, symbol: &str) -> Vec<String> {
    let params = module.func_params(symbol).unwrap_or_else(|e| panic!("{symbol} in BTF: {e}"));
    params.into_iter().map(|(name, _)| name).collect()
}

/// bpftrace's probe for `c`, filtered to the node namespace, the hook and
/// the table or chain as pathcost's report row is.
fn probe_script(c: &Comparison, netns: u32) -> String {
    let module = btf(c.module);
    let params = param_names(&module, c.symbol);
    let (bindings, filter) = match c.mode {
        Mode::IptablesLegacy | Mode::Ipvs => {
            // ipt_do_table(void *priv, skb, state) since 5.16, priv being the
            // xt_table; the IPVS hook is a netfilter hook: (priv, skb, state).
            assert_eq!(params, ["priv", "skb", "state"], "{} parameters", c.symbol);
            let state = "$state = (struct nf_hook_state *)arg2;";
            let common = format!("$state->net->ns.inum == {netns} && $state->pf == {IPV4}");
            if c.mode == Mode::Ipvs {
                (state.to_owned(), format!("{common} && $state->hook == {LOCAL_IN}"))
            } else {
                // struct xt_table lives in module BTF too (see nft below);
                // its name is an inline char array.
                let name = module
                    .member_offset("xt_table", "name")
                    .unwrap_or_else(|e| panic!("xt_table.name in ip_tables BTF: {e}"));
                (
                    format!("{state} $table_name = str(arg0 + {name});"),
                    format!("{common} && $state->hook == {PRE_ROUTING} && $table_name == \"nat\""),
                )
            }
        }
        Mode::IptablesNft => {
            assert_eq!(params, ["pkt", "priv"], "nft_do_chain parameters");
            // bpftrace 0.17 reads vmlinux BTF only, where struct nft_chain
            // and nft_table are mere declarations (they live in nf_tables),
            // so their members are read at offsets from the module's BTF
            // (parsed by pathcost's reader; equal counts check the filter).
            let off = |s: &str, m: &str| {
                module.member_offset(s, m).unwrap_or_else(|e| panic!("{s}.{m} in nf_tables BTF: {e}"))
            };
            let (chain_table, chain_name, table_name) =
                (off("nft_chain", "table"), off("nft_chain", "name"), off("nft_table", "name"));
            (
                format!(
                    "$pkt = (struct nft_pktinfo *)arg0; $chain = arg1; \
                     $chain_name = str(*(uint64 *)($chain + {chain_name})); \
                     $table_name = str(*(uint64 *)(*(uint64 *)($chain + {chain_table}) + {table_name}));"
                ),
                format!(
                    "$pkt->state->net->ns.inum == {netns} && $pkt->state->pf == {IPV4} && \
                     $pkt->state->hook == {PRE_ROUTING} && $table_name == \"nat\" && $chain_name == \"PREROUTING\""
                ),
            )
        }
        Mode::Nftables => unreachable!("not compared here"),
    };
    bpftrace_timed_calls("call", c.symbol, &bindings, &filter)
}

async fn compare(c: &Comparison) {
    let name = format!("probe_accuracy {}", c.mode);
    if let Some(why) = kprobe_skip_reason().or_else(bpftrace_skip_reason) {
        return skip(&name, &why);
    }
    if let Some(why) = c.mode.unavailable_reason(Scheduler::default()) {
        assert!(!pathcost_tests::in_vm(), "{name}: the VM must run this mode: {why}");
        return skip(&name, &why);
    }

    let cluster = Cluster::new(ClusterSpec::new(SERVICES, 2).with_protocols(vec![Protocol::Udp])).unwrap();
    let topo = Topology::build().unwrap();
    program(c.mode, &cluster, Scheduler::default(), &topo.node).unwrap();
    let netns = topo.node.inode().unwrap();

    // Attach order is the point (see the header): reference, second bpftrace, pathcost.
    let reference = Bpftrace::start(&probe_script(c, netns));
    let second = Bpftrace::start(&probe_script(c, netns));
    let mut session = Session::start(&SessionOptions {
        request: AttachRequest {
            sites: vec![ProbeSite::by_name(c.site).expect("known site")],
            explicit: true,
            backend: Backend::Kprobe,
            emit_events: true,
            bracket: None,
            transit: false,
        },
        calibrate: false,
        netns: Some(netns),
        keep_calls: false,
    })
    .unwrap();
    let targets = traffic::random_targets(cluster.service_ports(), CONNECTIONS, &mut SplitMix64::new(7));
    traffic::new_connections(&topo, targets, Pace { rate: 1000, max_time: Duration::from_secs(300) }).unwrap();
    session.collect_until(tokio::time::sleep(Duration::from_millis(500)), None, |_| {}).await.unwrap();
    let (report, _) = session.finish().unwrap();
    let stats = |b: Bpftrace, which: &str| {
        let output = b.stop();
        bpftrace_stats(&output, "call").unwrap_or_else(|| panic!("{name}: no @call in the {which} bpftrace's output: {output}"))
    };
    let (second, reference) = (stats(second, "second"), stats(reference, "reference"));

    let rows: Vec<_> =
        report.rows.iter().filter(|r| r.site == c.site && r.hook == c.hook && r.table == c.table).collect();
    assert_eq!(rows.len(), 1, "{name}: one {} {} {:?} row expected: {:#?}", c.site, c.hook, c.table, report.rows);
    let ours = &rows[0].inclusive;
    let pair = second.mean_ns - reference.mean_ns;
    let corrected = ours.mean_ns - 2.0 * pair;
    let ratio = corrected / reference.mean_ns;
    eprintln!(
        "probe accuracy {} on {}, {SERVICES} services, {} {} {}: bpftrace (attached first) {} calls, mean {:.0} ns; \
         one bpftrace pair inside a span {pair:.0} ns (the second bpftrace's mean {:.0} ns less the first's); \
         pathcost {} calls, mean {:.0} ns, less two bpftrace pairs {corrected:.0} ns; ratio {ratio:.3}",
        c.mode,
        report.kernel,
        c.site,
        c.hook,
        c.table,
        reference.count,
        reference.mean_ns,
        second.mean_ns,
        ours.count,
        ours.mean_ns,
    );
    assert!(ours.count >= u64::from(CONNECTIONS), "{name}: {} calls for {CONNECTIONS} new connections", ours.count);
    assert_eq!(ours.count, reference.count, "{name}: pathcost and bpftrace counted different calls");
    assert_eq!(second.count, reference.count, "{name}: the two bpftrace scripts counted different calls");
    assert!(pair >= 0.0, "{name}: a span holding another pair came out shorter ({pair:.0} ns): the attach order is not what the test assumes");
    assert!((0.9..=1.1).contains(&ratio), "{name}: pathcost/bpftrace mean ratio {ratio:.3} is outside 0.9..=1.1");
}

// One test, modes in turn: probes on the same functions must not overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kprobe_durations_agree_with_bpftrace_on_the_same_calls() {
    compare(&IPTABLES_LEGACY).await;
    compare(&IPTABLES_NFT).await;
    compare(&IPVS).await;
}
