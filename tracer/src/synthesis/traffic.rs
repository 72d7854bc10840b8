//! Real packets through the synthetic cluster: new connections to services
//! chosen uniformly at random (UDP from fresh source ports, TCP SYNs),
//! "miss" traffic to an address no service owns, and packets on
//! established flows. Each phase is bounded in count, rate and time and
//! records its window on the probes' clock (CLOCK_MONOTONIC, which is what
//! `bpf_ktime_get_ns` reads), so calls can be assigned to phases afterwards.

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

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
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
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
        let stop = Arc::new(AtomicBool::new(false));
        let (e, r, s) = (echo.clone(), received.clone(), stop.clone());
        let thread = thread::Builder::new().name("backend-echo".into()).spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                if let Some((n, from, to)) = recv_with_destination(&socket, &mut buf) {
                    r.fetch_add(1, Ordering::Relaxed);
                    if e.load(Ordering::Relaxed) {
                        send_from(&socket, &buf[..n], to, from);
                    }
                }
            }
        })?;
        Ok(Backend { echo, received, stop, thread: Some(thread) })
    }

    pub fn set_echo(&self, on: bool) {
        self.echo.store(on, Ordering::Relaxed);
    }

    /// UDP datagrams that reached an endpoint so far: proof that the
    /// service rules really forwarded them.
    pub fn udp_received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
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
    use std::os::fd::AsRawFd as _;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own with a c_int option.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_PKTINFO,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("IP_PKTINFO on the backend socket");
    }
    Ok(())
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
        sin_zero: [0; 8],
    }
}

/// Control-message space for one `in_pktinfo`, 8-aligned.
#[repr(C, align(8))]
struct PktinfoCmsg([u8; 64]);

/// A `msghdr` over one address, one buffer and `control_len` bytes of
/// `control`.
fn msghdr(
    addr: &mut libc::sockaddr_in,
    iov: &mut libc::iovec,
    control: &mut PktinfoCmsg,
    control_len: usize,
) -> libc::msghdr {
    // SAFETY: all-zero is a valid msghdr; the fields that matter are set.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (addr as *mut libc::sockaddr_in).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control_len;
    msg
}

/// Receives one datagram with the address it was sent to.
fn recv_with_destination(socket: &UdpSocket, buf: &mut [u8]) -> Option<(usize, SocketAddrV4, Ipv4Addr)> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: recvmsg into buffers that outlive the call; cmsgs are read
    // only through the CMSG_* accessors within msg_controllen.
    unsafe {
        let mut from: libc::sockaddr_in = std::mem::zeroed();
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        let mut control = PktinfoCmsg([0; 64]);
        let mut msg = msghdr(&mut from, &mut iov, &mut control, 64);
        let n = libc::recvmsg(socket.as_raw_fd(), &mut msg, 0);
        if n < 0 {
            return None;
        }
        let mut to = None;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::IPPROTO_IP && (*cmsg).cmsg_type == libc::IP_PKTINFO {
                let info: libc::in_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                to = Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        let from = SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(from.sin_addr.s_addr)),
            u16::from_be(from.sin_port),
        );
        Some((n as usize, from, to?))
    }
}

/// Sends `data` to `to` with `source` as the source address.
fn send_from(socket: &UdpSocket, data: &[u8], source: Ipv4Addr, to: SocketAddrV4) {
    use std::os::fd::AsRawFd as _;
    // SAFETY: sendmsg from buffers that outlive the call; the one cmsg is
    // written through the CMSG_* accessors inside the control buffer.
    unsafe {
        let mut dst = sockaddr(to);
        let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut _, iov_len: data.len() };
        let mut control = PktinfoCmsg([0; 64]);
        let space = libc::CMSG_SPACE(std::mem::size_of::<libc::in_pktinfo>() as u32) as usize;
        let msg = msghdr(&mut dst, &mut iov, &mut control, space);
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::IPPROTO_IP;
        (*cmsg).cmsg_type = libc::IP_PKTINFO;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::in_pktinfo>() as u32) as usize;
        let info = libc::in_pktinfo {
            ipi_ifindex: 0,
            ipi_spec_dst: libc::in_addr { s_addr: u32::from(source).to_be() },
            ipi_addr: libc::in_addr { s_addr: 0 },
        };
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast(), info);
        libc::sendmsg(socket.as_raw_fd(), &msg, 0);
    }
}

/// Opens a TCP connection attempt from `local` to `remote` (one SYN) and
/// abandons it at once; closing a socket in SYN_SENT sends nothing more.
fn send_syn(local: SocketAddrV4, remote: SocketAddrV4) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    // SAFETY: plain socket calls on a descriptor we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        );
        let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        let l = sockaddr(local);
        if libc::bind(fd.as_raw_fd(), (&l as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let r = sockaddr(remote);
        if libc::connect(fd.as_raw_fd(), (&r as *const libc::sockaddr_in).cast(), len) != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(err);
            }
        }
        Ok(())
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
    result
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
