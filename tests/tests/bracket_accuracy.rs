//! How far the tracepoint bracket can be trusted: the same packets, in the
//! same run, timed by pathcost's bracket and by an independent bpftrace
//! script on the same two tracepoints (bpftrace from Debian's packages).
//! Prints the ratio of the two means; fails if the counts differ or the
//! means disagree by more than 2x. On the host, as root, with bpftrace.
//!
//! bpftrace reads tracepoint formats from tracefs; it is mounted in a
//! private mount namespace (`unshare -m`), so the node's mounts don't change.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    process::{Command, Stdio},
    time::Duration,
};

use pathcost_tests::{is_root, skip};
use tracer::{
    probes::{attach::AttachRequest, Backend},
    synthesis::{
        cluster::{Cluster, ClusterSpec, Protocol, SplitMix64},
        ipvs::Scheduler,
        program::{program, Mode},
        topology::Topology,
        traffic::{self, Pace},
    },
    trace::{Session, SessionOptions},
};

const CONNECTIONS: u32 = 400;

/// The bracket, written independently: open at netif_receive_skb on the
/// ingress device of the node namespace, close at the same CPU's next
/// fib_table_lookup whose input interface is that device.
fn script(ifindex: u32, netns: u32) -> String {
    format!(
        r#"
tracepoint:net:netif_receive_skb
/((struct sk_buff *)args->skbaddr)->dev->ifindex == {ifindex} &&
 ((struct sk_buff *)args->skbaddr)->dev->nd_net.net->ns.inum == {netns}/
{{
  @start[cpu] = nsecs;
}}
tracepoint:fib:fib_table_lookup
/@start[cpu] != 0 && args->iif == {ifindex}/
{{
  @bracket = stats(nsecs - @start[cpu]);
  delete(@start[cpu]);
}}
END {{ clear(@start); }}
"#
    )
}

/// Parses bpftrace's `@bracket: count 400, average 5234, total 2093600`.
fn parse_stats(output: &str) -> Option<(u64, f64)> {
    let line = output.lines().find(|l| l.starts_with("@bracket:"))?;
    let field = |name: &str| -> Option<f64> {
        let rest = &line[line.find(name)? + name.len()..];
        rest.trim_start().split(|c: char| c == ',' || c.is_whitespace()).next()?.parse().ok()
    };
    Some((field("count")? as u64, field("average")?))
}

/// bpftrace is a host tool (the VM's initramfs does not carry it and its
/// libraries), so the VM suite leaves this module out.
mod host_only {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bracket_agrees_with_an_independent_bpftrace_measurement() {
        let name = "bracket_agrees_with_an_independent_bpftrace_measurement";
        if !is_root() {
            return skip(name, "needs root");
        }
        if Command::new("bpftrace").arg("--version").output().is_err() {
            return skip(name, "bpftrace is not installed (cargo xtask setup installs it)");
        }
        if let Some(why) = tracer::capabilities::bracket_unavailable_reason()
            .or_else(|| Mode::IptablesLegacy.unavailable_reason(Scheduler::default()))
        {
            return skip(name, &why);
        }

        let cluster = Cluster::new(ClusterSpec::new(1000, 2).with_protocols(vec![Protocol::Udp])).unwrap();
        let topo = Topology::build().unwrap();
        program(Mode::IptablesLegacy, &cluster, Scheduler::default(), &topo.node).unwrap();
        let filter = topo.bracket_filter().unwrap();

        let mut bpftrace = Command::new("unshare")
            .args(["-m", "sh", "-c", "mount -t tracefs nodev /sys/kernel/tracing && exec bpftrace -e \"$0\""])
            .arg(script(filter.ifindex, filter.netns))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start bpftrace");
        let mut out = BufReader::new(bpftrace.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(line.starts_with("Attaching"), "bpftrace did not start: {line}");

        let mut session = Session::start(&SessionOptions {
            request: AttachRequest {
                sites: Vec::new(),
                explicit: false,
                backend: Backend::Bracket,
                emit_events: true,
                bracket: Some(filter),
                transit: false,
            },
            calibrate: false,
            netns: Some(filter.netns),
            keep_calls: false,
        })
        .unwrap();
        let targets = traffic::random_targets(cluster.service_ports(), CONNECTIONS, &mut SplitMix64::new(9));
        traffic::new_connections(&topo, targets, Pace { rate: 2000, max_time: Duration::from_secs(120) }).unwrap();
        session.collect_until(tokio::time::sleep(Duration::from_millis(300)), None, |_| {}).await.unwrap();
        let (report, _) = session.finish().unwrap();

        // SIGINT makes bpftrace print its maps and exit.
        unsafe { libc::kill(bpftrace.id() as i32, libc::SIGINT) };
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        bpftrace.wait().unwrap();
        let (bt_count, bt_mean) = parse_stats(&rest).unwrap_or_else(|| panic!("no @bracket in bpftrace output: {rest}"));

        let row = report.rows.iter().find(|r| r.site == "prerouting_bracket").expect("bracket row");
        let ratio = row.inclusive.mean_ns / bt_mean;
        eprintln!(
            "bracket accuracy: pathcost {} packets, mean {:.0} ns; bpftrace {} packets, mean {:.0} ns; ratio {:.3}",
            row.inclusive.count, row.inclusive.mean_ns, bt_count, bt_mean, ratio
        );
        assert_eq!(row.inclusive.count, u64::from(CONNECTIONS));
        assert_eq!(bt_count, u64::from(CONNECTIONS));
        assert!((0.5..=2.0).contains(&ratio), "pathcost/bpftrace mean ratio {ratio:.3}");
    }
}

#[test]
fn bpftrace_stats_lines_parse() {
    assert_eq!(parse_stats("\n@bracket: count 400, average 5234, total 2093600\n"), Some((400, 5234.0)));
    assert_eq!(parse_stats("nothing"), None);
}
