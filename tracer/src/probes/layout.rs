//! Builds the programs' `ProbeConfig` from the running kernel's BTF: which
//! argument is the packet, the hook state, the table or chain, and where
//! their fields sit. Nothing here knows a kernel version; it asks BTF.

use anyhow::{Context as _, Result};
use tracer_ebpf::{BracketConfig, ProbeConfig, SiteId, SiteLayout, NO_ARG};

use crate::capabilities::btf::Btf;

/// Index of the parameter called `name` in `params`, as the programs'
/// `i8` argument index.
fn param(params: &[(String, String)], name: &str) -> Option<i8> {
    params.iter().position(|(n, _)| n == name).map(|i| i as i8)
}

fn offset(btf: &Btf, strukt: &str, member: &str) -> Result<i16> {
    let off = btf
        .member_offset(strukt, member)
        .with_context(|| format!("BTF has no {strukt}.{member}"))?;
    i16::try_from(off).with_context(|| format!("{strukt}.{member} offset {off} out of range"))
}

fn is_pointer(btf: &Btf, strukt: &str, member: &str) -> Result<u8> {
    let info = btf
        .member_info(strukt, member)
        .with_context(|| format!("BTF has no {strukt}.{member}"))?;
    Ok(u8::from(info.is_pointer))
}

/// Offsets of `hook` and `pf` in `struct nf_hook_state`, needed by every
/// site that gets a hook state.
pub fn base_config(vmlinux: &Btf) -> Result<ProbeConfig> {
    let mut cfg = ProbeConfig::EMPTY;
    cfg.state_hook_off = offset(vmlinux, "nf_hook_state", "hook")?;
    cfg.state_pf_off = offset(vmlinux, "nf_hook_state", "pf")?;
    cfg.state_net_off = offset(vmlinux, "nf_hook_state", "net")?;
    cfg.net_inum_off = offset(vmlinux, "net", "ns.inum")?;
    Ok(cfg)
}

/// Offsets the tracepoint bracket reads: the skb's device, its ifindex and
/// namespace, and the input interface of a route lookup.
pub fn bracket_config(vmlinux: &Btf, ifindex: u32, netns: u32, egress_ifindex: u32) -> Result<BracketConfig> {
    Ok(BracketConfig {
        skb_dev_off: offset(vmlinux, "sk_buff", "dev")?,
        dev_ifindex_off: offset(vmlinux, "net_device", "ifindex")?,
        dev_net_off: offset(vmlinux, "net_device", "nd_net.net")?,
        flowi4_iif_off: offset(vmlinux, "flowi4", "__fl_common.flowic_iif")?,
        ifindex,
        netns,
        egress_ifindex,
        _pad: 0,
    })
}

/// The layout of one site, given the BTF that describes its function
/// (vmlinux, or the module's split BTF) and the symbol that was resolved.
pub fn site_layout(id: SiteId, symbol: &str, btf: &Btf) -> Result<SiteLayout> {
    let params = btf
        .func_params(symbol)
        .with_context(|| format!("BTF has no prototype for {symbol}"))?;
    let mut l = SiteLayout::NONE;
    match id {
        SiteId::NfHookSlow | SiteId::IpvsIn => {
            l.skb_arg = param(&params, "skb").unwrap_or(NO_ARG);
            l.state_arg = param(&params, "state").unwrap_or(NO_ARG);
            // Before 5.16 `ip_vs_in(ipvs, hooknum, skb, af)` took the hook as a value.
            l.hook_value_arg = param(&params, "hooknum").unwrap_or(NO_ARG);
        }
        SiteId::IptDoTable => {
            l.skb_arg = param(&params, "skb").unwrap_or(NO_ARG);
            l.state_arg = param(&params, "state").unwrap_or(NO_ARG);
            // `priv` since 5.16, `table` before: both are `struct xt_table *`.
            l.name_obj_arg = param(&params, "priv")
                .or_else(|| param(&params, "table"))
                .unwrap_or(NO_ARG);
            l.name_off = offset(btf, "xt_table", "name")?;
            l.name_is_ptr = is_pointer(btf, "xt_table", "name")?;
        }
        SiteId::NftDoChain => {
            l.pkt_arg = param(&params, "pkt").unwrap_or(NO_ARG);
            l.pkt_skb_off = offset(btf, "nft_pktinfo", "skb")?;
            l.pkt_state_off = offset(btf, "nft_pktinfo", "state")?;
            l.name_obj_arg = param(&params, "priv").unwrap_or(NO_ARG);
            l.name_off = offset(btf, "nft_chain", "name")?;
            l.name_is_ptr = is_pointer(btf, "nft_chain", "name")?;
            l.table_ptr_off = offset(btf, "nft_chain", "table")?;
            l.table_name_off = offset(btf, "nft_table", "name")?;
            l.table_name_is_ptr = is_pointer(btf, "nft_table", "name")?;
        }
        SiteId::IpvsSchedule | SiteId::IpvsXmit => {
            l.skb_arg = param(&params, "skb").unwrap_or(NO_ARG);
        }
        SiteId::IpvsConnInGet | SiteId::Calibration | SiteId::Bracket | SiteId::Transit => {}
    }
    Ok(l)
}
