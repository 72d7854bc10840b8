//! `pathcost selftest`: proves on this kernel that the probes see real
//! packets. It builds a private network namespace with one iptables rule,
//! sends UDP packets through it while tracing, and checks that the probes
//! paired at least as many `nf_hook_slow` calls as the rule counted packets.

use std::{net::UdpSocket, time::Duration};

use anyhow::{bail, Context as _, Result};
use tracer_ebpf::SiteId;

use crate::{
    netns::NetNs,
    probes::{attach::AttachRequest, Backend, ProbeSite},
    trace::{Session, SessionOptions, TraceReport},
};

/// UDP port the test traffic goes to inside the namespace.
const PORT: u16 = 9999;

#[derive(Debug)]
pub struct SelftestOutcome {
    pub packets_sent: u64,
    /// Packets the iptables rule counted at LOCAL_OUT.
    pub rule_packets: u64,
    /// Entry/exit pairs of `nf_hook_slow`, counted in the kernel.
    pub nf_hook_slow_pairs: u64,
    pub report: TraceReport,
}

impl SelftestOutcome {
    /// The smoke criterion: pairs were seen, at least one per packet that
    /// crossed the hook, and no exit went unmatched.
    pub fn check(&self) -> Result<()> {
        if self.rule_packets == 0 {
            bail!("the iptables rule counted no packets: traffic did not flow");
        }
        if self.nf_hook_slow_pairs < self.rule_packets {
            bail!(
                "nf_hook_slow paired {} calls but the rule counted {} packets",
                self.nf_hook_slow_pairs,
                self.rule_packets
            );
        }
        if self.report.losses.unmatched_exits > 0 {
            bail!("{} probe exits went unmatched", self.report.losses.unmatched_exits);
        }
        Ok(())
    }
}

pub async fn run(backend: Backend, packets: u64, iptables: &str) -> Result<SelftestOutcome> {
    let ns = NetNs::new("selftest")?;
    // A filter rule that counts our packets, and a DNAT rule (to where the
    // packet goes anyway) so the nat table, what kube-proxy programs, is
    // walked too. DNAT also makes the namespace track connections: without
    // a rule that needs conntrack the nat table is never consulted.
    let port = PORT.to_string();
    let to = format!("127.0.0.1:{PORT}");
    ns.cmd(iptables, &["-t", "filter", "-A", "OUTPUT", "-p", "udp", "--dport", &port, "-j", "ACCEPT"])?;
    ns.cmd(iptables, &["-t", "nat", "-A", "OUTPUT", "-p", "udp", "--dport", &port, "-j", "DNAT", "--to-destination", &to])?;

    let site = |name| ProbeSite::by_name(name).expect("built-in site name");
    let mut session = Session::start(&SessionOptions {
        request: AttachRequest {
            transit: false,
            sites: vec![site("nf_hook_slow"), site("ipt_do_table")],
            explicit: false,
            backend,
            emit_events: true,
            // The bracket times packets arriving from a device; the
            // selftest's traffic stays on loopback.
            bracket: None,
        },
        calibrate: true,
        netns: Some(ns.inode()?),
        keep_calls: false,
    })?;
    let before = session.maps().site_count(SiteId::NfHookSlow)?;

    let sent = ns.run(move || -> Result<u64> {
        let rx = UdpSocket::bind(("127.0.0.1", PORT)).context("binding the receiver")?;
        // One socket per packet from a port not used before in this run,
        // so every packet is a new conntrack connection and walks the nat
        // table (an ephemeral port could repeat an earlier 5-tuple).
        let mut sent = 0;
        for port in (20_000..u16::MAX).take(packets as usize) {
            let tx = UdpSocket::bind(("127.0.0.1", port)).context("binding a sender")?;
            tx.send_to(b"pathcost", ("127.0.0.1", PORT)).context("sending")?;
            sent += 1;
        }
        drop(rx);
        Ok(sent)
    })??;

    // Let the ring drain: under emulation the reader can lag the senders.
    session
        .collect_until(tokio::time::sleep(Duration::from_millis(500)), None, |_| {})
        .await?;
    let pairs = session.maps().site_count(SiteId::NfHookSlow)? - before;
    let rule = ns.first_rule_packets(iptables, "filter", "OUTPUT")?;
    let (report, _) = session.finish()?;
    Ok(SelftestOutcome { packets_sent: sent, rule_packets: rule, nf_hook_slow_pairs: pairs, report })
}
