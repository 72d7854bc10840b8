//! Netlink messages as the kernel writes them, read from bytes: the
//! `nlmsghdr` stream of a dump answer, the TLV attributes inside one
//! message, and what pathcost counts in them (nf_tables tables, chains,
//! set elements; IPVS virtual servers; tc filters and XDP programs).
//!
//! Pure functions of the bytes: no socket here, so the fuzz step can feed
//! them anything. Every length is checked before it is used; a malformed
//! answer is an error, never a panic or a short count.

/// `NLMSG_ERROR`: an `nlmsgerr`, whose first field is 0 (an ACK) or a
/// negative errno.
pub const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`: the end of a dump.
pub const NLMSG_DONE: u16 = 3;
/// `NLM_F_DUMP_INTR`: the objects changed while the dump ran; its counts
/// are not one state's.
pub const NLM_F_DUMP_INTR: u16 = 0x10;
/// The attribute type without its `NLA_F_NESTED` / `NLA_F_NET_BYTEORDER`
/// flags.
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLMSG_HDRLEN: usize = 16;
const NLA_HDRLEN: usize = 4;

/// Why bytes are not a netlink answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("netlink message truncated: header says {claimed} bytes, {available} left")]
    Truncated { claimed: usize, available: usize },
    #[error("netlink message of {0} bytes is shorter than its header")]
    TooShort(usize),
    #[error("netlink attribute truncated at byte {0}")]
    AttributeTruncated(usize),
    #[error("the kernel answered error {errno} ({})", std::io::Error::from_raw_os_error(*.errno))]
    Kernel { errno: i32 },
    #[error("{what} is {len} bytes, expected {expected}")]
    BadLength {
        what: &'static str,
        len: usize,
        expected: usize,
    },
}

/// One message of a netlink answer, borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub kind: u16,
    pub flags: u16,
    pub sequence: u32,
    /// After the `nlmsghdr`: the family header, then attributes.
    pub payload: &'a [u8],
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Splits one `recv` worth of bytes into messages. An `NLMSG_ERROR` with
/// a non-zero code becomes [`MessageError::Kernel`]; so does an
/// `NLMSG_DONE` carrying a negative code (how a dump reports its failure).
pub fn messages(mut bytes: &[u8]) -> Result<Vec<Message<'_>>, MessageError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = u32_at(bytes, 0).ok_or(MessageError::TooShort(bytes.len()))? as usize;
        if len < NLMSG_HDRLEN {
            return Err(MessageError::TooShort(len));
        }
        if len > bytes.len() {
            return Err(MessageError::Truncated {
                claimed: len,
                available: bytes.len(),
            });
        }
        let message = Message {
            kind: u16_at(bytes, 4).ok_or(MessageError::TooShort(len))?,
            flags: u16_at(bytes, 6).ok_or(MessageError::TooShort(len))?,
            sequence: u32_at(bytes, 8).ok_or(MessageError::TooShort(len))?,
            payload: &bytes[NLMSG_HDRLEN..len],
        };
        if message.kind == NLMSG_ERROR || message.kind == NLMSG_DONE {
            // nlmsgerr.error / the DONE message's int: 0 or -errno.
            let code = u32_at(message.payload, 0).map_or(0, |c| c as i32);
            if code < 0 {
                return Err(MessageError::Kernel { errno: -code });
            }
            if message.kind == NLMSG_ERROR && message.payload.len() < 4 {
                return Err(MessageError::TooShort(len));
            }
        }
        out.push(message);
        bytes = &bytes[align4(len).min(bytes.len())..];
    }
    Ok(out)
}

/// One attribute: its type (flags masked off) and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute<'a> {
    pub kind: u16,
    pub value: &'a [u8],
}

impl<'a> Attribute<'a> {
    /// A NUL-terminated string attribute (names of tables, chains, sets).
    pub fn string(&self) -> String {
        let end = self
            .value
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.value.len());
        String::from_utf8_lossy(&self.value[..end]).into_owned()
    }

    pub fn u32(&self) -> Result<u32, MessageError> {
        let bytes: [u8; 4] = self.value.try_into().map_err(|_| MessageError::BadLength {
            what: "a u32 attribute",
            len: self.value.len(),
            expected: 4,
        })?;
        Ok(u32::from_ne_bytes(bytes))
    }

    pub fn u16(&self) -> Result<u16, MessageError> {
        let bytes: [u8; 2] =
            self.value
                .get(..2)
                .and_then(|b| b.try_into().ok())
                .ok_or(MessageError::BadLength {
                    what: "a u16 attribute",
                    len: self.value.len(),
                    expected: 2,
                })?;
        Ok(u16::from_ne_bytes(bytes))
    }

    /// The attributes nested in this one.
    pub fn nested(&self) -> Result<Vec<Attribute<'a>>, MessageError> {
        attributes(self.value)
    }
}

/// The TLV attributes in `bytes`.
pub fn attributes(mut bytes: &[u8]) -> Result<Vec<Attribute<'_>>, MessageError> {
    let mut out = Vec::new();
    let mut at = 0;
    while bytes.len() >= NLA_HDRLEN {
        let len = usize::from(u16_at(bytes, 0).ok_or(MessageError::AttributeTruncated(at))?);
        let kind = u16_at(bytes, 2).ok_or(MessageError::AttributeTruncated(at))? & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > bytes.len() {
            return Err(MessageError::AttributeTruncated(at));
        }
        out.push(Attribute {
            kind,
            value: &bytes[NLA_HDRLEN..len],
        });
        let step = align4(len).min(bytes.len());
        bytes = &bytes[step..];
        at += step;
    }
    // Fewer than a header's bytes left: padding only.
    Ok(out)
}

fn find<'a>(attrs: &[Attribute<'a>], kind: u16) -> Option<Attribute<'a>> {
    attrs.iter().find(|a| a.kind == kind).copied()
}

/// The subsystem of nf_tables' messages in `nlmsghdr.nlmsg_type` (high byte).
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `struct nfgenmsg`: family, version, resource id.
pub const NFGENMSG_LEN: usize = 4;

/// nf_tables message types (`enum nf_tables_msg_types`).
pub mod nft {
    pub const NEWTABLE: u16 = 0;
    pub const GETTABLE: u16 = 1;
    pub const NEWCHAIN: u16 = 3;
    pub const GETCHAIN: u16 = 4;
    pub const NEWSET: u16 = 9;
    pub const GETSET: u16 = 10;
    pub const NEWSETELEM: u16 = 12;
    pub const GETSETELEM: u16 = 13;
    /// `NFTA_TABLE_NAME`, `NFTA_CHAIN_TABLE`, `NFTA_SET_TABLE` and
    /// `NFTA_SET_ELEM_LIST_TABLE` are all 1.
    pub const ATTR_TABLE: u16 = 1;
    pub const TABLE_NAME: u16 = 1;
    pub const CHAIN_NAME: u16 = 3;
    pub const SET_NAME: u16 = 2;
    pub const SET_ELEM_LIST_SET: u16 = 2;
    pub const SET_ELEM_LIST_ELEMENTS: u16 = 3;
    pub const LIST_ELEM: u16 = 1;
    pub const SET_ELEM_DATA: u16 = 2;
    pub const DATA_VERDICT: u16 = 2;
    pub const VERDICT_CODE: u16 = 1;
    pub const VERDICT_CHAIN: u16 = 2;
    /// `NFT_GOTO`, big-endian on the wire.
    pub const GOTO: i32 = -4;
}

/// An nf_tables object named in a dump answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NftObject {
    Table {
        family: u8,
        name: String,
    },
    Chain {
        family: u8,
        table: String,
        name: String,
    },
    Set {
        family: u8,
        table: String,
        name: String,
    },
    /// One answer's worth of a set's elements: how many, and how many map
    /// to `goto CHAIN` for each chain target.
    Elements {
        family: u8,
        table: String,
        set: String,
        gotos: Vec<Option<String>>,
    },
}

/// Reads one nf_tables answer message; `None` for messages of other kinds
/// (the DONE at the end of a dump).
pub fn nft_object(m: &Message<'_>) -> Result<Option<NftObject>, MessageError> {
    if m.kind >> 8 != NFNL_SUBSYS_NFTABLES {
        return Ok(None);
    }
    let (Some(family), Some(attrs)) = (m.payload.first().copied(), m.payload.get(NFGENMSG_LEN..))
    else {
        return Err(MessageError::TooShort(m.payload.len()));
    };
    let attrs = attributes(attrs)?;
    let string = |kind| find(&attrs, kind).map(|a| a.string()).unwrap_or_default();
    Ok(Some(match m.kind & 0xff {
        nft::NEWTABLE => NftObject::Table {
            family,
            name: string(nft::TABLE_NAME),
        },
        nft::NEWCHAIN => NftObject::Chain {
            family,
            table: string(nft::ATTR_TABLE),
            name: string(nft::CHAIN_NAME),
        },
        nft::NEWSET => NftObject::Set {
            family,
            table: string(nft::ATTR_TABLE),
            name: string(nft::SET_NAME),
        },
        nft::NEWSETELEM => {
            let mut gotos = Vec::new();
            if let Some(list) = find(&attrs, nft::SET_ELEM_LIST_ELEMENTS) {
                for elem in list.nested()?.iter().filter(|a| a.kind == nft::LIST_ELEM) {
                    gotos.push(goto_target(elem)?);
                }
            }
            NftObject::Elements {
                family,
                table: string(nft::ATTR_TABLE),
                set: string(nft::SET_ELEM_LIST_SET),
                gotos,
            }
        }
        _ => return Ok(None),
    }))
}

/// The chain a verdict-map element jumps to with `goto`, if it does.
fn goto_target(elem: &Attribute<'_>) -> Result<Option<String>, MessageError> {
    let fields = elem.nested()?;
    let Some(data) = find(&fields, nft::SET_ELEM_DATA) else {
        return Ok(None);
    };
    let Some(verdict) = find(&data.nested()?, nft::DATA_VERDICT) else {
        return Ok(None);
    };
    let verdict = verdict.nested()?;
    let code = find(&verdict, nft::VERDICT_CODE)
        .map(|c| c.u32().map(|v| u32::from_be(v) as i32))
        .transpose()?;
    Ok(match code {
        Some(nft::GOTO) => find(&verdict, nft::VERDICT_CHAIN).map(|c| c.string()),
        _ => None,
    })
}

/// `struct genlmsghdr`: command, version, reserved.
pub const GENL_HDRLEN: usize = 4;
/// The generic netlink controller's family id and what pathcost asks it.
pub const GENL_ID_CTRL: u16 = 0x10;
pub const CTRL_CMD_GETFAMILY: u8 = 3;
pub const CTRL_ATTR_FAMILY_ID: u16 = 1;
pub const CTRL_ATTR_FAMILY_NAME: u16 = 2;

/// The family id in the controller's answer to `CTRL_CMD_GETFAMILY`.
pub fn genl_family_id(m: &Message<'_>) -> Result<Option<u16>, MessageError> {
    if m.kind != GENL_ID_CTRL {
        return Ok(None);
    }
    let attrs = attributes(
        m.payload
            .get(GENL_HDRLEN..)
            .ok_or(MessageError::TooShort(m.payload.len()))?,
    )?;
    find(&attrs, CTRL_ATTR_FAMILY_ID)
        .map(|a| a.u16())
        .transpose()
}

/// IPVS's generic netlink commands and attributes (`linux/ip_vs.h`).
pub mod ipvs {
    pub const FAMILY: &str = "IPVS";
    pub const VERSION: u8 = 1;
    pub const CMD_NEW_SERVICE: u8 = 1;
    pub const CMD_GET_SERVICE: u8 = 4;
    pub const CMD_ATTR_SERVICE: u16 = 1;
}

/// Whether an IPVS dump message describes one virtual server.
pub fn is_ipvs_service(m: &Message<'_>, family_id: u16) -> Result<bool, MessageError> {
    if m.kind != family_id {
        return Ok(false);
    }
    let command = *m.payload.first().ok_or(MessageError::TooShort(0))?;
    let attrs = attributes(
        m.payload
            .get(GENL_HDRLEN..)
            .ok_or(MessageError::TooShort(m.payload.len()))?,
    )?;
    Ok(command == ipvs::CMD_NEW_SERVICE && find(&attrs, ipvs::CMD_ATTR_SERVICE).is_some())
}

/// rtnetlink (`NETLINK_ROUTE`) message types and attributes pathcost reads.
pub mod rtnl {
    pub const RTM_NEWLINK: u16 = 16;
    pub const RTM_GETLINK: u16 = 18;
    pub const RTM_NEWTFILTER: u16 = 44;
    pub const RTM_GETTFILTER: u16 = 46;
    /// `struct ifinfomsg` and `struct tcmsg` sizes.
    pub const IFINFOMSG_LEN: usize = 16;
    pub const TCMSG_LEN: usize = 20;
    pub const IFLA_IFNAME: u16 = 3;
    pub const IFLA_XDP: u16 = 43;
    pub const IFLA_XDP_PROG_ID: u16 = 4;
    pub const TCA_KIND: u16 = 1;
    pub const TCA_OPTIONS: u16 = 2;
    pub const TCA_BPF_NAME: u16 = 7;
    pub const TCA_BPF_ID: u16 = 11;
    /// `TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)` and `..._EGRESS`: the
    /// clsact qdisc's two hooks.
    pub const CLSACT_INGRESS: u32 = 0xffff_fff2;
    pub const CLSACT_EGRESS: u32 = 0xffff_fff3;
}

/// A device and the XDP program attached to it, from an `RTM_NEWLINK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: i32,
    pub name: String,
    pub xdp_program: Option<u32>,
}

pub fn link(m: &Message<'_>) -> Result<Option<Link>, MessageError> {
    if m.kind != rtnl::RTM_NEWLINK {
        return Ok(None);
    }
    let header = m
        .payload
        .get(..rtnl::IFINFOMSG_LEN)
        .ok_or(MessageError::TooShort(m.payload.len()))?;
    let index = u32_at(header, 4).ok_or(MessageError::TooShort(header.len()))? as i32;
    let attrs = attributes(&m.payload[rtnl::IFINFOMSG_LEN..])?;
    let xdp_program = match find(&attrs, rtnl::IFLA_XDP) {
        Some(xdp) => find(&xdp.nested()?, rtnl::IFLA_XDP_PROG_ID)
            .map(|a| a.u32())
            .transpose()?
            .filter(|&id| id != 0),
        None => None,
    };
    Ok(Some(Link {
        index,
        name: find(&attrs, rtnl::IFLA_IFNAME)
            .map(|a| a.string())
            .unwrap_or_default(),
        xdp_program,
    }))
}

/// A `bpf` tc filter: the program it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpfFilter {
    pub ifindex: i32,
    /// `tcm_parent`: [`rtnl::CLSACT_INGRESS`], [`rtnl::CLSACT_EGRESS`] or a qdisc's class.
    pub parent: u32,
    pub program_id: u32,
    /// The name `tc` shows (object file and section), when given.
    pub name: Option<String>,
}

/// Reads an `RTM_NEWTFILTER`; `None` for filters of other kinds (u32,
/// flower) and for the filter chain's head without options.
pub fn bpf_filter(m: &Message<'_>) -> Result<Option<BpfFilter>, MessageError> {
    if m.kind != rtnl::RTM_NEWTFILTER {
        return Ok(None);
    }
    let header = m
        .payload
        .get(..rtnl::TCMSG_LEN)
        .ok_or(MessageError::TooShort(m.payload.len()))?;
    let ifindex = u32_at(header, 4).ok_or(MessageError::TooShort(header.len()))? as i32;
    let parent = u32_at(header, 12).ok_or(MessageError::TooShort(header.len()))?;
    let attrs = attributes(&m.payload[rtnl::TCMSG_LEN..])?;
    if find(&attrs, rtnl::TCA_KIND).map(|k| k.string()).as_deref() != Some("bpf") {
        return Ok(None);
    }
    let Some(options) = find(&attrs, rtnl::TCA_OPTIONS) else {
        return Ok(None);
    };
    let options = options.nested()?;
    let Some(program_id) = find(&options, rtnl::TCA_BPF_ID)
        .map(|a| a.u32())
        .transpose()?
    else {
        return Ok(None);
    };
    Ok(Some(BpfFilter {
        ifindex,
        parent,
        program_id,
        name: find(&options, rtnl::TCA_BPF_NAME).map(|a| a.string()),
    }))
}

/// Everything the readers above take from one answer, for the fuzz step:
/// any bytes either parse or give an error.
pub fn read_all(bytes: &[u8]) -> Result<usize, MessageError> {
    let mut objects = 0;
    for m in messages(bytes)? {
        objects += usize::from(nft_object(&m)?.is_some());
        objects += usize::from(genl_family_id(&m)?.is_some());
        objects += usize::from(is_ipvs_service(&m, GENL_ID_CTRL + 1)?);
        objects += usize::from(link(&m)?.is_some());
        objects += usize::from(bpf_filter(&m)?.is_some());
    }
    Ok(objects)
}

/// Builds request messages: a header, a family header, attributes.
#[derive(Debug, Clone)]
pub struct Request {
    bytes: Vec<u8>,
}

impl Request {
    pub fn new(kind: u16, flags: u16, sequence: u32, family_header: &[u8]) -> Request {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&flags.to_ne_bytes());
        bytes.extend_from_slice(&sequence.to_ne_bytes());
        // nlmsg_pid 0: the kernel.
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(family_header);
        bytes.resize(align4(bytes.len()), 0);
        Request { bytes }
    }

    /// Adds a NUL-terminated string attribute.
    pub fn string(mut self, kind: u16, value: &str) -> Request {
        let len = NLA_HDRLEN + value.len() + 1;
        self.bytes.extend_from_slice(&(len as u16).to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.bytes.extend_from_slice(value.as_bytes());
        self.bytes.push(0);
        self.bytes.resize(align4(self.bytes.len()), 0);
        self
    }

    pub fn finish(mut self) -> Vec<u8> {
        let len = self.bytes.len() as u32;
        self.bytes[..4].copy_from_slice(&len.to_ne_bytes());
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&((NLA_HDRLEN + value.len()) as u16).to_ne_bytes());
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(value);
        b.resize(align4(b.len()), 0);
        b
    }

    fn message(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut b = Request::new(kind, 0, 1, payload).finish();
        // Request pads the family header; the reader must accept it.
        b.truncate(NLMSG_HDRLEN + align4(payload.len()));
        b
    }

    #[test]
    fn reads_a_chain_and_a_verdict_map_element() {
        let mut chain = vec![2, 0, 0, 0];
        chain.extend(attr(nft::ATTR_TABLE, b"nat\0"));
        chain.extend(attr(nft::CHAIN_NAME, b"KUBE-SVC-ABC\0"));
        let mut bytes = message(NFNL_SUBSYS_NFTABLES << 8 | nft::NEWCHAIN, &chain);

        let mut verdict = attr(nft::VERDICT_CODE, &(nft::GOTO as u32).to_be_bytes());
        verdict.extend(attr(nft::VERDICT_CHAIN, b"service-X\0"));
        let data = attr(nft::DATA_VERDICT, &verdict);
        let elem = attr(nft::LIST_ELEM, &attr(nft::SET_ELEM_DATA, &data));
        let mut elems = vec![2, 0, 0, 0];
        elems.extend(attr(nft::ATTR_TABLE, b"kube-proxy\0"));
        elems.extend(attr(nft::SET_ELEM_LIST_SET, b"service-ips\0"));
        elems.extend(attr(
            nft::SET_ELEM_LIST_ELEMENTS,
            &[elem.clone(), attr(nft::LIST_ELEM, &[])].concat(),
        ));
        bytes.extend(message(NFNL_SUBSYS_NFTABLES << 8 | nft::NEWSETELEM, &elems));
        bytes.extend(message(NLMSG_DONE, &0u32.to_ne_bytes()));

        let ms = messages(&bytes).unwrap();
        assert_eq!(ms.len(), 3);
        assert_eq!(
            nft_object(&ms[0]).unwrap(),
            Some(NftObject::Chain {
                family: 2,
                table: "nat".into(),
                name: "KUBE-SVC-ABC".into()
            })
        );
        assert_eq!(
            nft_object(&ms[1]).unwrap(),
            Some(NftObject::Elements {
                family: 2,
                table: "kube-proxy".into(),
                set: "service-ips".into(),
                gotos: vec![Some("service-X".into()), None],
            })
        );
        assert_eq!(nft_object(&ms[2]).unwrap(), None);
    }

    /// Dump answers recorded from a 6.18 kernel (a network namespace with
    /// one kube-proxy nftables service and an iptables-nft `KUBE-SVC-`
    /// chain): the readers take what the kernel really writes, padding
    /// and nested flags included. `tests/tests/fuzz.rs` mutates them.
    #[test]
    fn reads_answers_recorded_from_a_kernel() {
        let fixture = |name: &str| {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("src/detection/netlink/fixtures")
                .join(name);
            std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let objects = |name: &str| -> Vec<NftObject> {
            messages(&fixture(name))
                .unwrap()
                .iter()
                .filter_map(|m| nft_object(m).unwrap())
                .collect()
        };
        assert_eq!(
            objects("nft-tables.bin"),
            [
                NftObject::Table { family: 2, name: "kube-proxy".into() },
                NftObject::Table { family: 2, name: "nat".into() },
            ]
        );
        assert_eq!(
            objects("nft-chains.bin"),
            [
                NftObject::Chain {
                    family: 2,
                    table: "kube-proxy".into(),
                    name: "service-ULMVA6XW-ns1/svc1/tcp/p80".into()
                },
                NftObject::Chain { family: 2, table: "nat".into(), name: "KUBE-SVC-AAAA".into() },
            ]
        );
        assert_eq!(
            objects("nft-setelems.bin"),
            [
                NftObject::Elements {
                    family: 2,
                    table: "kube-proxy".into(),
                    set: "service-ips".into(),
                    gotos: vec![None, Some("service-ULMVA6XW-ns1/svc1/tcp/p80".into())],
                },
                // The dump's last message: the same set, no elements left.
                NftObject::Elements {
                    family: 2,
                    table: "kube-proxy".into(),
                    set: "service-ips".into(),
                    gotos: vec![],
                },
            ]
        );
        let links: Vec<Link> = messages(&fixture("rtnl-links.bin"))
            .unwrap()
            .iter()
            .filter_map(|m| link(m).unwrap())
            .collect();
        assert_eq!(links.first().map(|l| (l.index, l.name.as_str())), Some((1, "lo")));
    }

    #[test]
    fn kernel_errors_and_truncation_are_errors() {
        let err = message(NLMSG_ERROR, &(-1i32).to_ne_bytes());
        assert_eq!(messages(&err), Err(MessageError::Kernel { errno: 1 }));
        let done = message(NLMSG_DONE, &(-4i32).to_ne_bytes());
        assert_eq!(messages(&done), Err(MessageError::Kernel { errno: 4 }));
        let ok = message(NLMSG_ERROR, &0i32.to_ne_bytes());
        assert_eq!(messages(&ok).unwrap().len(), 1);
        let mut cut = message(NFNL_SUBSYS_NFTABLES << 8, &[2, 0, 0, 0]);
        cut.truncate(18);
        assert!(matches!(
            messages(&cut),
            Err(MessageError::Truncated { .. })
        ));
        assert_eq!(
            attributes(&[8, 0, 1, 0, 1]),
            Err(MessageError::AttributeTruncated(0))
        );
        assert_eq!(
            attributes(&[2, 0, 1, 0]),
            Err(MessageError::AttributeTruncated(0))
        );
    }

    #[test]
    fn reads_a_bpf_tc_filter_and_an_xdp_link() {
        let mut tc = vec![0u8; rtnl::TCMSG_LEN];
        tc[4..8].copy_from_slice(&7u32.to_ne_bytes());
        tc[12..16].copy_from_slice(&rtnl::CLSACT_INGRESS.to_ne_bytes());
        tc.extend(attr(rtnl::TCA_KIND, b"bpf\0"));
        let opts = [
            attr(rtnl::TCA_BPF_ID, &42u32.to_ne_bytes()),
            attr(rtnl::TCA_BPF_NAME, b"lb.o:[tc]\0"),
        ]
        .concat();
        tc.extend(attr(rtnl::TCA_OPTIONS | 0x8000, &opts));
        let m = message(rtnl::RTM_NEWTFILTER, &tc);
        let f = bpf_filter(&messages(&m).unwrap()[0]).unwrap().unwrap();
        assert_eq!(
            (f.ifindex, f.parent, f.program_id, f.name.as_deref()),
            (7, rtnl::CLSACT_INGRESS, 42, Some("lb.o:[tc]"))
        );

        let mut l = vec![0u8; rtnl::IFINFOMSG_LEN];
        l[4..8].copy_from_slice(&3u32.to_ne_bytes());
        l.extend(attr(rtnl::IFLA_IFNAME, b"eth0\0"));
        l.extend(attr(
            rtnl::IFLA_XDP,
            &attr(rtnl::IFLA_XDP_PROG_ID, &9u32.to_ne_bytes()),
        ));
        let m = message(rtnl::RTM_NEWLINK, &l);
        assert_eq!(
            link(&messages(&m).unwrap()[0]).unwrap(),
            Some(Link {
                index: 3,
                name: "eth0".into(),
                xdp_program: Some(9)
            })
        );
    }
}
