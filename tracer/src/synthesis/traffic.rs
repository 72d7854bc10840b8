//! Real packets through the synthetic cluster: new connections to services
//! chosen uniformly at random (UDP from fresh source ports, TCP SYNs),
//! "miss" traffic to an address no service owns, and packets on
//! established flows. Each phase is bounded in count, rate and time and
//! records its window on the probes' clock (CLOCK_MONOTONIC, which is what
//! `bpf_ktime_get_ns` reads), so calls can be assigned to phases afterwards.

use std::{
    io::{IoSlice, IoSliceMut},
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::{AsRawFd as _, OwnedFd},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use nix::{
    cmsg_space,
    errno::Errno,
    sys::socket::{
        self, recvmsg, sendmsg, setsockopt, sockopt, AddressFamily, ControlMessage,
        ControlMessageOwned, MsgFlags, SockFlag, SockType, SockaddrIn,
    },
    time::{clock_gettime, ClockId},
};

use super::{
    cluster::{Protocol, ServicePort, SplitMix64},
    topology::Topology,
};

/// First local port of the client's sequential source ports: each new
/// connection gets one never used before on this topology (whatever the
/// phase), so conntrack always sees a new 5-tuple and the lookup runs.
const FIRST_SOURCE_PORT: u16 = 10_000;
/// Source ports available for new connections on one topology.
pub const MAX_CONNECTIONS: u32 = 50_000;

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    // CLOCK_MONOTONIC exists on every Linux, so this cannot fail.
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map_or(0, |t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
}

/// A traffic phase's time window and what was sent in it.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Window {
    pub start_ns: u64,
    pub end_ns: u64,
    pub packets: u64,
}

impl Window {
    pub fn contains(&self, t: u64) -> bool {
        (self.start_ns..self.end_ns).contains(&t)
    }
}

/// Limits of one phase.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// Packets per second at most (0: as fast as possible).
    pub rate: u32,
    /// Stop the phase after this long whatever was sent.
    pub max_time: Duration,
}

impl Pace {
    fn wait_turn(&self, started: Instant, sent: u64) {
        if self.rate == 0 {
            return;
        }
        let due = started + Duration::from_secs_f64(sent as f64 / f64::from(self.rate));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
    }

    fn expired(&self, started: Instant) -> bool {
        started.elapsed() >= self.max_time
    }
}

/// The backend's side: a UDP socket on every pod address (through the
/// backend's local route) that echoes only when asked, and a firewall that
/// silently drops TCP, so new-connection phases see no reply packets.
pub struct Backend {
    echo: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    /// The first reply the kernel refused: a flow then never becomes
    /// established, and the client's error says why.
    echo_error: Arc<Mutex<Option<Errno>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Backend {
    pub fn start(topo: &Topology, port: u16) -> Result<Backend> {
        topo.backend
            .cmd("iptables-legacy", &["-A", "INPUT", "-p", "tcp", "-j", "DROP"])
            .context("backend firewall")?;
        let socket = topo.backend.run(move || UdpSocket::bind(("0.0.0.0", port)))??;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        enable_pktinfo(&socket)?;
        let echo = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let echo_error = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (e, r, err, s) = (echo.clone(), received.clone(), echo_error.clone(), stop.clone());
        let thread = thread::Builder::new().name("backend-echo".into()).spawn(move || {
            let mut buf = [0u8; 2048];
            let mut control = cmsg_space!(libc::in_pktinfo);
            while !s.load(Ordering::Relaxed) {
                if let Some((n, from, to)) = recv_with_destination(&socket, &mut buf, &mut control) {
                    r.fetch_add(1, Ordering::Relaxed);
                    if e.load(Ordering::Relaxed) {
                        if let Err(errno) = send_from(&socket, &buf[..n], to, from) {
                            err.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(errno);
                        }
                    }
                }
            }
        })?;
        Ok(Backend { echo, received, echo_error, stop, thread: Some(thread) })
    }

    pub fn set_echo(&self, on: bool) {
        self.echo.store(on, Ordering::Relaxed);
    }

    /// UDP datagrams that reached an endpoint so far: proof that the
    /// service rules really forwarded them.
    pub fn udp_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Why a reply could not be sent, if one could not.
    fn echo_error(&self) -> Option<Errno> {
        *self.echo_error.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// TCP SYNs that reached an endpoint (counted by the backend's drop rule).
    pub fn tcp_syns_received(topo: &Topology) -> Result<u64> {
        topo.backend.first_rule_packets("iptables-legacy", "filter", "INPUT")
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// The backend answers for a whole range of endpoint addresses on one
// wildcard socket, so a reply must name its source explicitly: otherwise
// the kernel picks the interface address, conntrack on the node does not
// recognise the reply, and the flow never becomes established.

fn enable_pktinfo(socket: &UdpSocket) -> Result<()> {
    setsockopt(socket, sockopt::Ipv4PacketInfo, &true).context("IP_PKTINFO on the backend socket")
}

/// Receives one datagram into `buf` with the address it came from and the
/// address it was sent to (from its IP_PKTINFO); `None` on a timeout or a
/// datagram without one. `control` is the space for that control message.
fn recv_with_destination(
    socket: &UdpSocket,
    buf: &mut [u8],
    control: &mut [u8],
) -> Option<(usize, SocketAddrV4, Ipv4Addr)> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrIn>(socket.as_raw_fd(), &mut iov, Some(control), MsgFlags::empty()).ok()?;
    let to = msg.cmsgs().ok()?.find_map(|c| match c {
        ControlMessageOwned::Ipv4PacketInfo(info) => Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr))),
        _ => None,
    })?;
    let from = msg.address?;
    Some((msg.bytes, SocketAddrV4::new(from.ip(), from.port()), to))
}

/// Sends `data` to `to` with `source` as the source address.
fn send_from(socket: &UdpSocket, data: &[u8], source: Ipv4Addr, to: SocketAddrV4) -> nix::Result<()> {
    let info = libc::in_pktinfo {
        ipi_ifindex: 0,
        ipi_spec_dst: libc::in_addr { s_addr: u32::from(source).to_be() },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    let sent = sendmsg(
        socket.as_raw_fd(),
        &[IoSlice::new(data)],
        &[ControlMessage::Ipv4PacketInfo(&info)],
        MsgFlags::empty(),
        Some(&SockaddrIn::from(to)),
    )?;
    // A datagram goes whole or not at all; anything else is a kernel bug.
    if sent != data.len() {
        return Err(Errno::EMSGSIZE);
    }
    Ok(())
}

/// Opens a TCP connection attempt from `local` to `remote` (one SYN) and
/// abandons it at once; closing a socket in SYN_SENT sends nothing more.
fn send_syn(local: SocketAddrV4, remote: SocketAddrV4) -> std::io::Result<()> {
    let fd: OwnedFd = socket::socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_NONBLOCK, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    socket::bind(fd.as_raw_fd(), &SockaddrIn::from(local))?;
    // Non-blocking: the SYN is on its way when connect says EINPROGRESS.
    match socket::connect(fd.as_raw_fd(), &SockaddrIn::from(remote)) {
        Ok(()) | Err(Errno::EINPROGRESS) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Sends one new connection per target, each from a fresh source port, on
/// the client's thread. Returns the phase window.
pub fn new_connections(
    topo: &Topology,
    targets: Vec<(Protocol, SocketAddrV4)>,
    pace: Pace,
) -> Result<Window> {
    let count = u32::try_from(targets.len()).unwrap_or(u32::MAX);
    let first = topo.source_ports_used.fetch_add(count, Ordering::Relaxed);
    if first.saturating_add(count) > MAX_CONNECTIONS {
        bail!("at most {MAX_CONNECTIONS} new connections per topology, over all of its phases");
    }
    topo.client.run(move || -> Result<Window> {
        let mut w = Window { start_ns: monotonic_ns(), ..Window::default() };
        let started = Instant::now();
        for (i, (protocol, to)) in targets.into_iter().enumerate() {
            if pace.expired(started) {
                break;
            }
            pace.wait_turn(started, w.packets);
            let local = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, FIRST_SOURCE_PORT + (first as usize + i) as u16);
            match protocol {
                Protocol::Udp => {
                    let s = UdpSocket::bind(local).with_context(|| format!("binding {local}"))?;
                    s.send_to(b"pathcost new", to).with_context(|| format!("sending to {to}"))?;
                }
                Protocol::Tcp => send_syn(local, to).with_context(|| format!("SYN to {to}"))?,
            }
            w.packets += 1;
        }
        settle();
        w.end_ns = monotonic_ns();
        Ok(w)
    })?
}

/// Opens `flows` UDP flows, lets the backend answer each (so conntrack
/// calls them established), then sends `packets_per_flow` more packets on
/// each. Only the second part is in the returned window.
pub fn established_packets(
    topo: &Topology,
    backend: &Backend,
    targets: Vec<SocketAddrV4>,
    packets_per_flow: u32,
    pace: Pace,
) -> Result<Window> {
    backend.set_echo(true);
    let result = topo.client.run(move || -> Result<Window> {
        let mut sockets = Vec::new();
        for (i, to) in targets.iter().enumerate() {
            // Source ports above the new-connection range: never reused.
            let local = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, FIRST_SOURCE_PORT + MAX_CONNECTIONS as u16 + i as u16);
            let s = UdpSocket::bind(local)?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.connect(to)?;
            s.send(b"pathcost open")?;
            let mut buf = [0u8; 64];
            s.recv(&mut buf).with_context(|| format!("no answer from {to}: the flow is not established"))?;
            sockets.push(s);
        }
        settle();
        let mut w = Window { start_ns: monotonic_ns(), ..Window::default() };
        let started = Instant::now();
        'outer: for _ in 0..packets_per_flow {
            for s in &sockets {
                if pace.expired(started) {
                    break 'outer;
                }
                pace.wait_turn(started, w.packets);
                s.send(b"pathcost established")?;
                w.packets += 1;
            }
        }
        settle();
        w.end_ns = monotonic_ns();
        Ok(w)
    })?;
    backend.set_echo(false);
    match backend.echo_error() {
        Some(errno) => result.with_context(|| format!("the backend could not answer: sendmsg failed: {errno}")),
        None => result,
    }
}

/// How long a phase waits at its end for in-flight packets (and echoes).
pub const SETTLE: Duration = Duration::from_millis(200);

fn settle() {
    thread::sleep(SETTLE);
}

/// `count` targets: services drawn uniformly at random, with their protocol.
pub fn random_targets(services: &[ServicePort], count: u32, rng: &mut SplitMix64) -> Vec<(Protocol, SocketAddrV4)> {
    (0..count)
        .map(|_| {
            let s = &services[rng.below(services.len() as u64) as usize];
            (s.protocol, SocketAddrV4::new(s.cluster_ip, s.port))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The backend's reply path on loopback, which needs no namespace: a
    /// datagram sent to 127.0.0.2 on a wildcard socket is answered from
    /// 127.0.0.2, not from the address the kernel would pick (127.0.0.1).
    #[test]
    fn replies_come_from_the_address_a_datagram_was_sent_to() {
        let server = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        server.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        enable_pktinfo(&server).unwrap();
        let port = server.local_addr().unwrap().port();
        let endpoint = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2), port);

        let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        client.send_to(b"hello", endpoint).unwrap();

        let mut buf = [0u8; 64];
        let mut control = cmsg_space!(libc::in_pktinfo);
        let (n, from, to) = recv_with_destination(&server, &mut buf, &mut control).expect("a datagram with IP_PKTINFO");
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(to, *endpoint.ip());
        assert_eq!(std::net::SocketAddr::V4(from), client.local_addr().unwrap());

        send_from(&server, b"world", to, from).unwrap();
        let (n, replier) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"world");
        assert_eq!(replier, std::net::SocketAddr::V4(endpoint));
    }
}
