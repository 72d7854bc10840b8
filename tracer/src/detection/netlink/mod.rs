//! A small read-only netlink client: what the kernel itself says about
//! kube-proxy's nf_tables objects (`NETLINK_NETFILTER`), IPVS's virtual
//! servers (generic netlink family `IPVS`) and the BPF programs on the
//! devices (`NETLINK_ROUTE`), without forking a tool whose version may not
//! read what a newer one wrote.
//!
//! Only dump (`GET`) requests are sent, never a `NEW`/`DEL`. Sockets are
//! opened by the calling thread, so they answer for that thread's network
//! namespace, the one detection reads. [`message`] parses the answers.

pub mod message;

use std::{
    os::fd::{AsRawFd as _, OwnedFd},
    time::Duration,
};

use nix::{
    errno::Errno,
    sys::{
        socket::{
            self, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
        },
        time::TimeVal,
    },
};

use super::nftables::{NftObjects, KUBE_PROXY_TABLE};
use message::{Message, MessageError, Request};

/// `NLM_F_REQUEST | NLM_F_DUMP` (`NLM_F_ROOT | NLM_F_MATCH`).
const DUMP: u16 = 0x1 | 0x300;
const REQUEST: u16 = 0x1;
/// More than one dump answer: the kernel fills at most 32 KiB per message batch.
const RECEIVE_BUFFER: usize = 64 * 1024;
/// A dump whose objects changed under it is asked again this many times.
const DUMP_TRIES: usize = 3;

/// Why a netlink question got no answer.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a {protocol} netlink socket: {errno}")]
    Open {
        protocol: &'static str,
        errno: Errno,
    },
    #[error("netlink {what} failed: {errno}")]
    Io { what: &'static str, errno: Errno },
    #[error("no answer from the kernel within {0:?}")]
    Timeout(Duration),
    #[error("the kernel's answer is malformed: {0}")]
    Message(#[from] MessageError),
    #[error("an answer of {0} bytes did not fit the receive buffer")]
    TooLarge(usize),
    #[error("the objects kept changing during the dump ({DUMP_TRIES} tries)")]
    Interrupted,
}

/// One netlink socket to the kernel.
pub struct Socket {
    fd: OwnedFd,
    sequence: u32,
    timeout: Duration,
}

impl Socket {
    pub fn open(protocol: SockProtocol, timeout: Duration) -> Result<Socket, NetlinkError> {
        let name = match protocol {
            SockProtocol::NetlinkNetFilter => "NETLINK_NETFILTER",
            SockProtocol::NetlinkGeneric => "NETLINK_GENERIC",
            _ => "NETLINK_ROUTE",
        };
        let open = |errno| NetlinkError::Open {
            protocol: name,
            errno,
        };
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            protocol,
        )
        .map_err(open)?;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(open)?;
        let tv = TimeVal::new(timeout.as_secs() as _, timeout.subsec_micros() as _);
        socket::setsockopt(&fd, sockopt::ReceiveTimeout, &tv).map_err(open)?;
        Ok(Socket {
            fd,
            sequence: 0,
            timeout,
        })
    }

    /// Sends one request (`header` is the family's own: `nfgenmsg`,
    /// `genlmsghdr`, `ifinfomsg`, `tcmsg`) and reads every answer message
    /// with `read` until the kernel says the answer is complete. With
    /// `dump`, a dump interrupted by a change is asked again from scratch.
    pub fn ask<T>(
        &mut self,
        kind: u16,
        dump: bool,
        header: &[u8],
        attrs: &[(u16, &str)],
        read: impl Fn(&Message<'_>) -> Result<Option<T>, MessageError>,
    ) -> Result<Vec<T>, NetlinkError> {
        for _ in 0..DUMP_TRIES {
            self.sequence = self.sequence.wrapping_add(1);
            let mut request = Request::new(
                kind,
                if dump { DUMP } else { REQUEST },
                self.sequence,
                header,
            );
            for (a, v) in attrs {
                request = request.string(*a, v);
            }
            let bytes = request.finish();
            socket::send(self.fd.as_raw_fd(), &bytes, MsgFlags::empty()).map_err(|errno| {
                NetlinkError::Io {
                    what: "send",
                    errno,
                }
            })?;
            match self.receive(dump, &read) {
                Err(NetlinkError::Interrupted) => continue,
                other => return other,
            }
        }
        Err(NetlinkError::Interrupted)
    }

    fn receive<T>(
        &mut self,
        dump: bool,
        read: &impl Fn(&Message<'_>) -> Result<Option<T>, MessageError>,
    ) -> Result<Vec<T>, NetlinkError> {
        let mut buffer = vec![0u8; RECEIVE_BUFFER];
        let mut out = Vec::new();
        let mut interrupted = false;
        let mut answered = false;
        loop {
            // MSG_TRUNC: the answer's real length, to tell a cut one.
            let n = match socket::recv(self.fd.as_raw_fd(), &mut buffer, MsgFlags::MSG_TRUNC) {
                Ok(n) => n,
                Err(Errno::EAGAIN) => return Err(NetlinkError::Timeout(self.timeout)),
                Err(Errno::EINTR) => continue,
                Err(errno) => {
                    return Err(NetlinkError::Io {
                        what: "receive",
                        errno,
                    })
                }
            };
            if n > buffer.len() {
                return Err(NetlinkError::TooLarge(n));
            }
            for m in message::messages(&buffer[..n])? {
                if m.sequence != self.sequence {
                    // A late answer to an earlier request.
                    continue;
                }
                answered = true;
                interrupted |= m.flags & message::NLM_F_DUMP_INTR != 0;
                match m.kind {
                    message::NLMSG_DONE if interrupted => return Err(NetlinkError::Interrupted),
                    // The end of a dump, or an ACK (errors were returned by `messages`).
                    message::NLMSG_DONE | message::NLMSG_ERROR => return Ok(out),
                    _ => out.extend(read(&m)?),
                }
            }
            // A plain request is answered by one message.
            if !dump && answered {
                return Ok(out);
            }
        }
    }
}

/// `NFPROTO_*`, as nft names them.
fn nft_family(family: u8) -> &'static str {
    match family {
        1 => "inet",
        2 => "ip",
        3 => "arp",
        5 => "netdev",
        7 => "bridge",
        10 => "ip6",
        _ => "unknown",
    }
}

/// Sets of kube-proxy's table whose elements are counted
/// (docs/kube-proxy-rules.md#nftables-mode).
const COUNTED_SETS: [&str; 2] = ["service-ips", "cluster-ips"];

/// nf_tables' tables, every chain, and the elements of kube-proxy's
/// `service-ips` / `cluster-ips`, as the kernel holds them: the same
/// [`NftObjects`] the `nft -j` reader fills, so both are counted alike.
pub fn nf_tables_objects(timeout: Duration) -> Result<NftObjects, NetlinkError> {
    let mut socket = Socket::open(SockProtocol::NetlinkNetFilter, timeout)?;
    let kind = |t: u16| message::NFNL_SUBSYS_NFTABLES << 8 | t;
    // nfgenmsg: every family, version 0, resource id 0.
    let any_family = [0u8, 0, 0, 0];
    let mut objects = NftObjects::default();
    let mut sets = Vec::new();
    for request in [
        message::nft::GETTABLE,
        message::nft::GETCHAIN,
        message::nft::GETSET,
    ] {
        for o in socket.ask(kind(request), true, &any_family, &[], message::nft_object)? {
            match o {
                message::NftObject::Table { family, name } => {
                    objects.add_table(nft_family(family), &name)
                }
                message::NftObject::Chain {
                    family,
                    table,
                    name,
                } => objects.add_chain(nft_family(family), &table, &name),
                message::NftObject::Set {
                    family,
                    table,
                    name,
                } => sets.push((family, table, name)),
                message::NftObject::Elements { .. } => {}
            }
        }
    }
    for (family, table, set) in sets {
        if table != KUBE_PROXY_TABLE || !COUNTED_SETS.contains(&set.as_str()) {
            continue;
        }
        let answers = socket.ask(
            kind(message::nft::GETSETELEM),
            true,
            &[family, 0, 0, 0],
            &[
                (message::nft::ATTR_TABLE, &table),
                (message::nft::SET_ELEM_LIST_SET, &set),
            ],
            message::nft_object,
        )?;
        let targets: Vec<Option<String>> = answers
            .into_iter()
            .flat_map(|o| match o {
                message::NftObject::Elements { gotos, .. } => gotos,
                _ => Vec::new(),
            })
            .collect();
        objects.add_set_elements(
            nft_family(family),
            &table,
            &set,
            targets.iter().map(Option::as_deref),
        );
    }
    Ok(objects)
}

/// The id of a generic netlink family, `None` when the kernel has none of
/// that name (its module is not loaded). Asked only when the subsystem is
/// known to be there: the controller loads a missing family's module.
fn genl_family(socket: &mut Socket, name: &str) -> Result<Option<u16>, NetlinkError> {
    let header = [message::CTRL_CMD_GETFAMILY, 1, 0, 0];
    match socket.ask(
        message::GENL_ID_CTRL,
        false,
        &header,
        &[(message::CTRL_ATTR_FAMILY_NAME, name)],
        message::genl_family_id,
    ) {
        Err(NetlinkError::Message(MessageError::Kernel { errno })) if errno == libc::ENOENT => {
            Ok(None)
        }
        Err(e) => Err(e),
        Ok(ids) => Ok(ids.first().copied()),
    }
}

/// IPVS virtual servers in this network namespace (`IPVS_CMD_GET_SERVICE`
/// dump); `None` when the kernel has no IPVS family.
pub fn ipvs_virtual_servers(timeout: Duration) -> Result<Option<usize>, NetlinkError> {
    let mut socket = Socket::open(SockProtocol::NetlinkGeneric, timeout)?;
    let Some(family) = genl_family(&mut socket, message::ipvs::FAMILY)? else {
        return Ok(None);
    };
    let services = socket.ask(
        family,
        true,
        &[message::ipvs::CMD_GET_SERVICE, message::ipvs::VERSION, 0, 0],
        &[],
        |m| Ok(message::is_ipvs_service(m, family)?.then_some(())),
    )?;
    Ok(Some(services.len()))
}

/// Every device of this network namespace, with its XDP program.
pub fn links(timeout: Duration) -> Result<Vec<message::Link>, NetlinkError> {
    let mut socket = Socket::open(SockProtocol::NetlinkRoute, timeout)?;
    socket.ask(
        message::rtnl::RTM_GETLINK,
        true,
        &[0u8; message::rtnl::IFINFOMSG_LEN],
        &[],
        message::link,
    )
}

/// The `bpf` tc filters on the clsact hooks (ingress, egress) of device
/// `ifindex`. A device without a clsact qdisc has none (`EINVAL`/`ENOENT`).
pub fn bpf_filters(
    ifindex: i32,
    timeout: Duration,
) -> Result<Vec<message::BpfFilter>, NetlinkError> {
    let mut socket = Socket::open(SockProtocol::NetlinkRoute, timeout)?;
    let mut filters = Vec::new();
    for parent in [message::rtnl::CLSACT_INGRESS, message::rtnl::CLSACT_EGRESS] {
        let mut header = [0u8; message::rtnl::TCMSG_LEN];
        header[0] = libc::AF_UNSPEC as u8;
        header[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        header[12..16].copy_from_slice(&parent.to_ne_bytes());
        match socket.ask(
            message::rtnl::RTM_GETTFILTER,
            true,
            &header,
            &[],
            message::bpf_filter,
        ) {
            Ok(found) => filters.extend(found),
            Err(NetlinkError::Message(MessageError::Kernel { errno }))
                if [libc::EINVAL, libc::ENOENT, libc::EOPNOTSUPP].contains(&errno) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filters)
}

/// What kube-proxy's iptables-nft rules count in nf_tables: the `nat`
/// table of family `ip`, as [`super::iptables::count_service_chains`]
/// counts it.
pub fn iptables_nft_counts(objects: &NftObjects) -> Option<(usize, usize)> {
    let chains = objects.chains_of("ip", "nat");
    let counts = super::iptables::count_service_chains(chains.iter().map(String::as_str));
    (counts != (0, 0)).then_some(counts)
}

/// Whether an error means the caller lacks the capability.
pub fn is_permission(e: &NetlinkError) -> bool {
    match e {
        NetlinkError::Open { errno, .. } | NetlinkError::Io { errno, .. } => {
            matches!(errno, Errno::EPERM | Errno::EACCES)
        }
        NetlinkError::Message(MessageError::Kernel { errno }) => *errno == libc::EPERM,
        _ => false,
    }
}
