//! Plain-text rendering of a [`Detection`] for a terminal: one section per
//! question (mode, backend, services, leftovers, kernel, probe sites).

use std::fmt::Write as _;

use super::{Confidence, Detection, ModeSource, NodeFindings};
use crate::{
    detection::kernel::{Capability, ModuleState, ProbeSiteReadiness},
    text::columns,
};

fn opt(n: Option<usize>) -> String {
    n.map_or_else(|| "?".to_owned(), |n| n.to_string())
}

fn list(items: &Option<Vec<String>>) -> String {
    match items {
        None => "unknown".to_owned(),
        Some(v) if v.is_empty() => "none".to_owned(),
        Some(v) => v.join(", "),
    }
}

/// The node half: mode, backend, services, leftovers, notes.
pub fn render_node(n: &NodeFindings) -> String {
    let mut out = String::new();
    let m = &n.proxy_mode;
    let confidence = match m.confidence {
        Confidence::High => "high",
        Confidence::Medium => "medium",
        Confidence::Low => "low",
    };
    let source = match m.source {
        ModeSource::MetricsEndpoint => "kube-proxy's /proxyMode",
        ModeSource::NodeState => "the node's state",
    };
    let _ = writeln!(
        out,
        "kube-proxy mode: {} (from {source}, confidence {confidence})",
        m.mode.map_or("none detected", |m| m.as_str())
    );
    let _ = writeln!(out, "  /proxyMode: {}", m.endpoint);
    for e in &m.evidence {
        let _ = writeln!(out, "  found: {e}");
    }

    let b = &n.iptables_backend;
    let _ = writeln!(out, "\niptables backend:");
    let _ = writeln!(out, "  legacy tables:       {}", list(&b.legacy_tables));
    let _ = writeln!(out, "  legacy ip6 tables:   {}", list(&b.legacy_ip6_tables));
    let _ = writeln!(out, "  iptables-nft tables: {}", list(&b.nft_tables));
    let _ = writeln!(
        out,
        "  kube-proxy chains:   {}",
        b.kube_proxy_chains_in.as_str()
    );
    let _ = writeln!(out, "  kubelet hint/canary: {}", b.kubelet_hint_in.as_str());
    let _ = writeln!(
        out,
        "  iptables-wrapper would use: {} ({})",
        b.wrapper_choice, b.wrapper_reason
    );
    if let Some(active) = b.active {
        let _ = writeln!(out, "  active: {active}");
    }

    let _ = writeln!(out, "\nservices (from the node's own rules):");
    let s = &n.services;
    if s.iptables.is_empty() && s.ipvs.is_none() && s.nftables.is_empty() {
        let _ = writeln!(out, "  no kube-proxy rules found");
    }
    for i in &s.iptables {
        let r = &i.rules;
        let _ = writeln!(
            out,
            "  iptables ({}): {} service ports (KUBE-SVC/SVL), {} endpoints (KUBE-SEP), \
             nat KUBE-SERVICES {} rules, {} without endpoints",
            i.backend,
            r.service_ports,
            r.endpoint_chains,
            r.kube_services_rules,
            r.no_endpoint_rules
        );
    }
    if let Some(v) = &s.ipvs {
        let device = v.kube_ipvs0.as_ref().map_or_else(
            || "no kube-ipvs0".to_owned(),
            |d| format!("kube-ipvs0 {} addresses", d.addresses.len()),
        );
        let _ = writeln!(
            out,
            "  ipvs: {} virtual servers, {} real servers, {device}, {} entries in KUBE-CLUSTER-IP, {} KUBE-* ipsets",
            opt(v.virtual_servers),
            opt(v.real_servers),
            opt(v.cluster_ip_set_entries),
            v.ipsets.len()
        );
    }
    for t in &s.nftables {
        let _ = writeln!(
            out,
            "  nftables ({}): {} service chains, {} endpoint chains, service-ips {} elements ({} to service chains), cluster-ips {}",
            t.family,
            t.service_chains,
            t.endpoint_chains,
            opt(t.service_ips_elements),
            opt(t.service_ips_service_gotos),
            opt(t.cluster_ips)
        );
    }

    if !n.leftovers.is_empty() {
        let _ = writeln!(out, "\nleftovers of another mode:");
        for l in &n.leftovers {
            let _ = writeln!(out, "  {}: {}", l.mode, l.what);
        }
    }
    if !n.notes.is_empty() {
        let _ = writeln!(out, "\nnotes:");
        for note in &n.notes {
            let _ = writeln!(out, "  {note}");
        }
    }
    out
}

fn capability_row(name: &str, c: &Capability) -> Vec<String> {
    vec![
        name.to_owned(),
        c.support.as_str().to_owned(),
        c.evidence.clone(),
    ]
}

fn site_row(s: &ProbeSiteReadiness) -> Vec<String> {
    let home = match (s.module, s.module_state) {
        (None, _) => "vmlinux".to_owned(),
        (Some(m), Some(ModuleState::BuiltIn)) => format!("{m} (built in)"),
        (Some(m), Some(ModuleState::Loaded)) => format!("{m} (loaded)"),
        (Some(m), _) => format!("{m} (not loaded)"),
    };
    vec![
        s.site.to_owned(),
        s.symbol.clone().unwrap_or_else(|| "-".to_owned()),
        home,
        s.btf.clone().unwrap_or_else(|| "-".to_owned()),
        s.mechanism_expected
            .map_or_else(|| "none".to_owned(), |m| m.to_string()),
        s.notes.join("; "),
    ]
}

pub fn render(d: &Detection) -> String {
    let mut out = render_node(&d.node);
    if !d.count_sources.is_empty() {
        let _ = writeln!(out, "\ncounts by source (netlink is reported where it answered):");
        let rows: Vec<Vec<String>> = d
            .count_sources
            .iter()
            .map(|c| {
                vec![
                    c.counted_in.clone(),
                    c.what.to_owned(),
                    opt(c.netlink),
                    opt(c.tool),
                    c.answered_by.map_or("none", |s| s.as_str()).to_owned(),
                    if c.disagree { "DISAGREE" } else { "" }.to_owned(),
                ]
            })
            .collect();
        for line in columns(&["where", "count", "netlink", "tool", "reported", ""], &rows).lines() {
            let _ = writeln!(out, "  {}", line.trim_end());
        }
    }
    let k = &d.kernel;
    let _ = writeln!(out, "\nkernel {}:", k.release);
    let t = &k.tracepoints;
    let rows = vec![
        capability_row("BTF", &k.btf),
        capability_row("kprobes", &k.kprobes),
        capability_row("fentry", &k.fentry),
        capability_row(&t.netif_receive_skb.name, &t.netif_receive_skb.exists),
        capability_row(&t.fib_table_lookup.name, &t.fib_table_lookup.exists),
        capability_row("raw tracepoints", &t.raw_tracepoint_programs),
        capability_row("IPVS loaded", &k.ipvs_loaded),
        capability_row("netfilter BPF link", &k.netfilter_bpf_link),
    ];
    for line in columns(&["capability", "support", "evidence"], &rows).lines() {
        let _ = writeln!(out, "  {line}");
    }

    let _ = writeln!(
        out,
        "\nprobe sites (expected mechanism; nothing was attached):"
    );
    let rows: Vec<Vec<String>> = d.probe_sites.iter().map(site_row).collect();
    for line in columns(
        &["site", "symbol", "home", "BTF", "mechanism", "notes"],
        &rows,
    )
    .lines()
    {
        let _ = writeln!(out, "  {line}");
    }
    out
}
