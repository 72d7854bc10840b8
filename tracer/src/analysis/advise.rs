//! `pathcost advise`: turns a sweep's fitted lines into a choice of
//! kube-proxy mode for one node: what each mode costs at the node's N and
//! at ten times N, which mode to run and why, the configuration for it,
//! how to migrate and what can go wrong, and the folklore figures set
//! against the measured ones. Every measured number comes from the results;
//! the only numbers typed in here are the folklore being tested and
//! upstream facts (release numbers, module names).

use std::fmt::Write as _;

use anyhow::{bail, Result};

use super::{Analysis, Basis, LinearFit, ModeAnalysis, NOISE_SHARE};
use crate::{
    results::Results,
    synthesis::program::Mode,
    text::{columns, human_ms, human_ns, ratio, significant, thousands},
};

/// What is known about the node being advised.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// The data-plane mode it runs now.
    pub mode: Option<Mode>,
    /// Its number of service ports (a service with two ports counts twice):
    /// what kube-proxy's rules grow with.
    pub service_ports: Option<u32>,
    /// Where these facts come from ("detected on this node", ...).
    pub origin: Option<String>,
}


/// What a mode costs at the N advised for.
#[derive(Clone, Debug)]
pub struct ModeCost {
    pub mode: Mode,
    /// Predicted ns per new connection (p50) at N and at 10 × N.
    pub at_n: f64,
    pub at_10n: f64,
    /// Uncertainty of `at_n` (standard error of the line there), when known.
    pub at_n_stderr: Option<f64>,
    pub fit: LinearFit,
}

/// The mode to run, and why.
#[derive(Clone, Debug)]
pub struct Recommendation {
    pub mode: Mode,
    pub reason: String,
    /// Modes whose predicted cost is within noise of the recommended one.
    pub tied_with: Vec<Mode>,
}

/// How kube-proxy's configuration names a data-plane mode. Both iptables
/// backends are `iptables`: the node's iptables binary picks the backend.
pub fn kube_proxy_mode(mode: Mode) -> &'static str {
    match mode {
        Mode::IptablesLegacy | Mode::IptablesNft => "iptables",
        Mode::Ipvs => "ipvs",
        Mode::Nftables => "nftables",
    }
}

/// Every mode with a per-new-connection line, costed at `n`.
pub fn mode_costs(analysis: &Analysis, n: f64) -> Vec<ModeCost> {
    analysis
        .modes
        .iter()
        .filter_map(|m| {
            // Predictions never fall with N: see LinearFit::non_decreasing.
            let fit = m.new_connection_p50.as_ref()?.non_decreasing();
            Some(ModeCost {
                mode: m.mode,
                at_n: fit.predict(n),
                at_10n: fit.predict(10.0 * n),
                at_n_stderr: fit.prediction_stderr(n),
                fit,
            })
        })
        .collect()
}

fn within_noise(a: &ModeCost, b: &ModeCost) -> bool {
    let diff = (a.at_n - b.at_n).abs();
    let share = NOISE_SHARE * a.at_n.abs().min(b.at_n.abs());
    let stat = match (a.at_n_stderr, b.at_n_stderr) {
        (Some(x), Some(y)) => 2.0 * (x * x + y * y).sqrt(),
        _ => 0.0,
    };
    diff <= share.max(stat)
}

/// Lowest predicted per-new-connection cost at N wins, with two
/// tie-breaks: nftables when it is within noise of the winner (it is where
/// upstream is heading: GA in 1.33), and any other mode within noise
/// rather than IPVS (deprecated in 1.35).
pub fn recommend(costs: &[ModeCost], n: f64) -> Option<Recommendation> {
    let cheapest = costs.iter().min_by(|a, b| a.at_n.total_cmp(&b.at_n))?;
    let tied: Vec<&ModeCost> = costs.iter().filter(|c| c.mode != cheapest.mode && within_noise(c, cheapest)).collect();
    let at = thousands(n.round() as u64);
    let nft = tied.iter().find(|c| c.mode == Mode::Nftables);
    let (choice, reason) = if cheapest.mode == Mode::Nftables {
        (cheapest, format!("lowest predicted cost per new connection at {at} services ({})", human_ns(cheapest.at_n)))
    } else if let Some(nft) = nft {
        (
            *nft,
            format!(
                "within noise of the cheapest ({} at {}, nftables at {}), and nftables is where kube-proxy is heading (GA since 1.33)",
                cheapest.mode,
                human_ns(cheapest.at_n),
                human_ns(nft.at_n)
            ),
        )
    } else if cheapest.mode == Mode::Ipvs {
        match tied.iter().filter(|c| c.mode != Mode::Ipvs).min_by(|a, b| a.at_n.total_cmp(&b.at_n)) {
            Some(alt) => (
                *alt,
                format!(
                    "within noise of ipvs ({} against {}), and IPVS mode is deprecated since Kubernetes 1.35",
                    human_ns(alt.at_n),
                    human_ns(cheapest.at_n)
                ),
            ),
            None => {
                let runner_up = costs
                    .iter()
                    .filter(|c| c.mode != Mode::Ipvs)
                    .min_by(|a, b| a.at_n.total_cmp(&b.at_n))
                    .map_or(String::new(), |c| format!(" ({} at {})", c.mode, human_ns(c.at_n)));
                (
                    cheapest,
                    format!(
                        "lowest predicted cost per new connection at {at} services ({}); but IPVS mode is deprecated since Kubernetes 1.35, so plan for the runner-up{runner_up}",
                        human_ns(cheapest.at_n)
                    ),
                )
            }
        }
    } else {
        (cheapest, format!("lowest predicted cost per new connection at {at} services ({})", human_ns(cheapest.at_n)))
    };
    let tied_with = costs.iter().filter(|c| c.mode != choice.mode && within_noise(c, choice)).map(|c| c.mode).collect();
    Some(Recommendation { mode: choice.mode, reason, tied_with })
}

/// The N to advise for, in the sweep's unit (services, each with one port
/// per protocol): the node's service ports converted, else the largest
/// measured N.
fn advised_n(results: &Results, node: &NodeFacts) -> Option<(f64, String)> {
    if let Some(ports) = node.service_ports {
        let per_service = results.settings.protocols.len().max(1);
        let n = f64::from(ports) / per_service as f64;
        let origin = node.origin.as_deref().map_or(String::new(), |o| format!(", {o}"));
        if per_service == 1 {
            return Some((n, format!("{} service ports on the node{origin}", thousands(u64::from(ports)))));
        }
        return Some((
            n,
            format!(
                "{} service ports on the node{origin}: {} services of the sweep, which gave each service {per_service} ports",
                thousands(u64::from(ports)),
                thousands(n.round() as u64)
            ),
        ));
    }
    let n = results.points.iter().map(|p| p.services).max()?;
    Some((
        f64::from(n),
        format!("{} services, the largest measured", thousands(u64::from(n))),
    ))
}

/// The service count to advise for, with where it came from, and each
/// mode's cost there; or why these results cannot give advice. `source`
/// names the results file. Asked before any output is written, so that a
/// refusal is the run's one message.
pub fn basis(results: &Results, analysis: &Analysis, source: &str, node: &NodeFacts) -> Result<(f64, String, Vec<ModeCost>)> {
    let Some((n, n_source)) = advised_n(results, node) else {
        bail!("results file {source} holds no measured points: nothing to advise from (run `pathcost sweep` first)");
    };
    let costs = mode_costs(analysis, n);
    if costs.is_empty() {
        bail!(
            "results file {source} has no mode measured at two or more service counts, so no cost line can be drawn; run `pathcost sweep --services 10,100,1000`"
        );
    }
    Ok((n, n_source, costs))
}

/// The advice as text. `source` names the results file.
pub fn render(results: &Results, analysis: &Analysis, source: &str, node: &NodeFacts) -> Result<String> {
    let (n, n_source, costs) = basis(results, analysis, source, node)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pathcost advise: from {source} (kernel {}, {} points, {})",
        results.kernel,
        results.points.len(),
        results.tool
    );
    let _ = writeln!(out, "advising for {n_source}");
    if node.service_ports.is_none() {
        let _ = writeln!(out, "(pass --services with the node's service-port count, or --live, to advise for the node's own size)");
    }
    match node.mode {
        Some(m) => {
            let _ = writeln!(out, "the node runs {m}");
        }
        None => {
            let _ = writeln!(out, "the node's current mode is not given (pass --mode, or --live)");
        }
    }
    if analysis.emulation_suspected {
        let _ = writeln!(
            out,
            "note: these timings come from an emulated or heavily loaded machine (see the warnings): every absolute ns is inflated; the ratios between modes and N are what carries over"
        );
    }

    let _ = writeln!(out, "\ncompared by: {} (p50), from the least-squares line of each mode:", analysis.basis.describe());
    let n10 = 10.0 * n;
    let mut rows = Vec::new();
    let mut extrapolated = false;
    for c in &costs {
        let m = analysis.modes.iter().find(|m| m.mode == c.mode).expect("costs come from analysis.modes");
        let star = |x: f64, extrapolated: &mut bool| {
            if c.fit.extrapolates_to(x) {
                *extrapolated = true;
                "*"
            } else {
                ""
            }
        };
        let (s1, s2) = (star(n, &mut extrapolated), star(n10, &mut extrapolated));
        let nearest = nearest_point(results, analysis.basis, c.mode, n);
        rows.push(vec![
            c.mode.to_string(),
            format!("{}{s1}", human_ns(c.at_n)),
            format!("{}{s2}", human_ns(c.at_10n)),
            m.transit_established_p50
                .as_ref()
                .or(m.established_packet_p50.as_ref())
                .map_or("-".into(), |f| human_ns(f.non_decreasing().predict(n))),
            m.lookup_p50.as_ref().map_or("-".into(), |f| human_ns(f.non_decreasing().predict(n))),
            m.control_plane_ms.as_ref().map_or("-".into(), |f| human_ms(f.non_decreasing().predict(n))),
            m.control_plane_ms.as_ref().map_or("-".into(), |f| human_ms(f.non_decreasing().predict(n10))),
            // The slope as measured, falling or not.
            m.new_connection_p50.as_ref().map_or("-".into(), |f| format!("{} ns", significant(f.slope))),
            m.new_connection_p50.as_ref().map_or("-".into(), |f| {
                format!("{:.2}{}", f.r_squared, if f.points < super::MIN_FIT_POINTS { " (2 N only)" } else { "" })
            }),
            nearest.map_or("-".into(), |(pn, p50)| format!("{} at {}", human_ns(p50), thousands(u64::from(pn)))),
        ]);
    }
    let (h1, h2) = (format!("at {}", thousands(n as u64)), format!("at {}", thousands(n10 as u64)));
    let h3 = format!("established pkt at {}", thousands(n as u64));
    let h4 = format!("lookup at {}", thousands(n as u64));
    let (h5, h6) = (format!("programming at {}", thousands(n as u64)), format!("at {}", thousands(n10 as u64)));
    out.push_str(&indent(&columns(
        &["mode", &h1, &h2, &h3, &h4, &h5, &h6, "per service", "R²", "nearest measured"],
        &rows,
    )));
    if extrapolated {
        let lo = costs.iter().map(|c| c.fit.n_min).fold(f64::INFINITY, f64::min);
        let hi = costs.iter().map(|c| c.fit.n_max).fold(0.0, f64::max);
        let _ = writeln!(
            out,
            "  * extrapolated beyond the measured N ({} to {}): a line is a guess out there; sweep up to {} to know",
            thousands(lo as u64),
            thousands(hi as u64),
            thousands(n10 as u64)
        );
    }
    let falling: Vec<String> = analysis
        .modes
        .iter()
        .filter(|m| m.new_connection_p50.as_ref().is_some_and(|f| f.slope < 0.0))
        .map(|m| m.mode.to_string())
        .collect();
    if !falling.is_empty() {
        let _ = writeln!(
            out,
            "  {}: the measured slope is negative, which is noise (more rules never make a lookup cheaper); predicted as flat at the mean",
            falling.join(", ")
        );
    }
    for m in &analysis.modes {
        if m.new_connection_p50.is_none() {
            let _ = writeln!(out, "  {}: measured at one service count only, no line to predict from", m.mode);
        }
    }

    let Some(rec) = recommend(&costs, n) else { unreachable!("costs is not empty") };
    let _ = writeln!(out, "\nrecommended: {} (kube-proxy mode `{}`)", rec.mode, kube_proxy_mode(rec.mode));
    let _ = writeln!(out, "  why: {}", rec.reason);
    if !rec.tied_with.is_empty() {
        let tied: Vec<String> = rec.tied_with.iter().map(|m| m.to_string()).collect();
        let _ = writeln!(out, "  within noise of it at this N: {}", tied.join(", "));
    }
    growth_note(&mut out, &costs, &rec, n);
    if rec.mode == Mode::IptablesLegacy || rec.mode == Mode::IptablesNft {
        let other = if rec.mode == Mode::IptablesLegacy { Mode::IptablesNft } else { Mode::IptablesLegacy };
        let _ = writeln!(
            out,
            "  the measured backend is {}: kube-proxy's mode is `iptables` either way, and the node's iptables binary picks the backend ({} is the other one)",
            rec.mode, other
        );
    }

    let _ = writeln!(out, "\nKubeProxyConfiguration:");
    out.push_str(&indent(&config_snippet(rec.mode, &results.settings.ipvs_scheduler)));

    migration(&mut out, node.mode, rec.mode);
    folklore(&mut out, analysis, &costs, n);
    Ok(out)
}

fn indent(text: &str) -> String {
    text.lines().map(|l| if l.is_empty() { "\n".to_owned() } else { format!("  {l}\n") }).collect()
}

/// The measured point of `mode` whose N is closest to `n` on a log scale.
fn nearest_point(results: &Results, basis: Basis, mode: Mode, n: f64) -> Option<(u32, f64)> {
    results
        .points_of(mode)
        .into_iter()
        .filter(|p| basis.figure(p).count > 0 && p.services > 0)
        .min_by(|a, b| {
            let d = |p: &super::Point| (f64::from(p.services).ln() - n.max(1.0).ln()).abs();
            d(a).total_cmp(&d(b))
        })
        .map(|p| (p.services, basis.figure(p).p50_ns as f64))
}

/// Says when the recommendation would change as the cluster grows.
fn growth_note(out: &mut String, costs: &[ModeCost], rec: &Recommendation, n: f64) {
    let Some(chosen) = costs.iter().find(|c| c.mode == rec.mode) else { return };
    let Some(best_10n) = costs.iter().min_by(|a, b| a.at_10n.total_cmp(&b.at_10n)) else { return };
    if best_10n.mode == chosen.mode || best_10n.at_10n >= chosen.at_10n * (1.0 - NOISE_SHARE) {
        let _ = writeln!(out, "  at 10× N ({} services) it stays at or near the cheapest", thousands((10.0 * n) as u64));
        return;
    }
    let cross = super::fit::intersection(&chosen.fit, &best_10n.fit).filter(|x| *x > n);
    let _ = writeln!(
        out,
        "  at 10× N ({} services) {} would be cheaper ({} against {}){}: revisit when the cluster grows",
        thousands((10.0 * n) as u64),
        best_10n.mode,
        human_ns(best_10n.at_10n),
        human_ns(chosen.at_10n),
        cross.map_or(String::new(), |x| format!("; the lines cross near {} services", thousands(x.round() as u64)))
    );
}

/// The configuration that selects `mode`, as kube-proxy reads it
/// (kubeadm keeps it in ConfigMap kube-system/kube-proxy, key config.conf).
pub fn config_snippet(mode: Mode, ipvs_scheduler: &str) -> String {
    let mut s = String::from("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n");
    let _ = writeln!(s, "mode: {}", kube_proxy_mode(mode));
    if mode == Mode::Ipvs {
        // The scheduler measured, so the advice matches the numbers.
        let _ = writeln!(s, "ipvs:\n  scheduler: {ipvs_scheduler}");
    }
    s
}

fn modules(mode: Mode) -> &'static str {
    match mode {
        Mode::IptablesLegacy => "ip_tables, iptable_nat, iptable_filter, nf_nat, nf_conntrack and the xt_* match modules",
        Mode::IptablesNft => "nf_tables, nft_compat, nft_chain_nat, nf_nat and nf_conntrack",
        Mode::Ipvs => "ip_vs, ip_vs_<scheduler> (ip_vs_rr for rr), ip_set with its hash types, nf_conntrack, and iptables for the glue rules IPVS mode still writes",
        Mode::Nftables => "nf_tables and nft_chain_nat, nf_nat, nf_conntrack (kube-proxy's nftables mode needs kernel 5.13 or later and nft 1.0.1 or later)",
    }
}

/// Migration steps and their risks, from `from` (unknown: any) to `to`.
fn migration(out: &mut String, from: Option<Mode>, to: Mode) {
    let _ = writeln!(out);
    if from == Some(to) {
        let _ = writeln!(out, "migration: the node already runs {to}; nothing to change.");
        return;
    }
    if matches!((from, to), (Some(Mode::IptablesLegacy), Mode::IptablesNft) | (Some(Mode::IptablesNft), Mode::IptablesLegacy)) {
        let _ = writeln!(out, "migration from {} to {to} (the same kube-proxy mode, another iptables backend):", from.expect("matched Some"));
        let _ = writeln!(
            out,
            "  1. The backend is not a kube-proxy setting. kube-proxy's image runs the iptables-wrapper, which picks nft when kubelet's KUBE-IPTABLES-HINT or KUBE-KUBELET-CANARY chain is in nft tables, else legacy if that chain is in legacy tables."
        );
        let _ = writeln!(
            out,
            "  2. Switch the node's own iptables (e.g. update-alternatives --set iptables /usr/sbin/iptables-{}) so kubelet and the CNI plugin write the same backend, then reboot the node: a reboot is the clean way to drop the other backend's rules.",
            if to == Mode::IptablesNft { "nft" } else { "legacy" }
        );
        let _ = writeln!(out, "  3. Check: iptables-save shows the KUBE-* chains, and iptables-{}-save shows none.", if to == Mode::IptablesNft { "legacy" } else { "nft" });
        let _ = writeln!(out, "  risk: rules left in the old backend still run; two backends on one node make hard-to-read failures.");
        return;
    }
    let from_name = from.map_or_else(|| "the current mode".to_owned(), |m| m.to_string());
    let _ = writeln!(out, "migration from {from_name} to {to}:");
    let _ = writeln!(out, "  1. Kernel modules: make sure {} load at boot (list them in /etc/modules-load.d/).", modules(to));
    let _ = writeln!(
        out,
        "  2. Set `mode: {}` in the KubeProxyConfiguration (kubeadm: kubectl -n kube-system edit configmap kube-proxy). Running kube-proxy pods keep the old mode until they restart.",
        kube_proxy_mode(to)
    );
    let _ = writeln!(
        out,
        "  3. One node at a time: kubectl drain NODE --ignore-daemonsets, delete that node's kube-proxy pod, check `curl -s 127.0.0.1:10249/proxyMode` prints {}, then kubectl uncordon NODE.",
        kube_proxy_mode(to)
    );
    let _ = writeln!(out, "  4. {}", stale_rules(from, to));
    let _ = writeln!(out, "  5. Measure again on the node: pathcost trace --duration 60s.");
    let _ = writeln!(out, "  risks:");
    let _ = writeln!(
        out,
        "  - conntrack: entries survive the switch, so connections NATed by iptables or nftables keep their backend; new connections take the new rules."
    );
    if from == Some(Mode::Ipvs) || to == Mode::Ipvs || from.is_none() {
        let _ = writeln!(
            out,
            "  - IPVS keeps its own connection table: connections it was forwarding can reset when IPVS mode is turned on or off. Drain the node first."
        );
    }
    if to == Mode::Ipvs {
        let _ = writeln!(out, "  - IPVS mode is deprecated since Kubernetes 1.35 (KEP-5495); plan the next move.");
    }
    let _ = writeln!(out, "  - A node whose kernel lacks the modules keeps failing to program rules: check kube-proxy's log for \"Using {} Proxier\".", kube_proxy_mode(to));
}

/// What kube-proxy cleans when it starts in the new mode, and what it leaves.
fn stale_rules(from: Option<Mode>, to: Mode) -> String {
    let to_iptables_family = matches!(to, Mode::IptablesLegacy | Mode::IptablesNft);
    match (from, to) {
        (_, Mode::Nftables) => {
            "Stale rules: at start-up in nftables mode kube-proxy deletes iptables and IPVS leftovers itself; check afterwards that iptables-save shows no KUBE-SVC- chains and that kube-ipvs0 is gone.".into()
        }
        (Some(Mode::Nftables), _) => format!(
            "Stale rules: at start-up in {} mode kube-proxy deletes the nftables kube-proxy tables itself; check that `nft list tables` shows no kube-proxy table.",
            kube_proxy_mode(to)
        ),
        (Some(Mode::Ipvs), _) if to_iptables_family => {
            "Stale rules: kube-proxy does not clean IPVS leftovers when it starts in iptables mode. Run `kube-proxy --cleanup` on the node before switching, or remove them by hand (ip link delete kube-ipvs0; ipvsadm --clear; ipset destroy for the KUBE-* sets), or reboot. A kube-ipvs0 left behind keeps every ClusterIP bound to the node.".into()
        }
        (Some(Mode::IptablesLegacy | Mode::IptablesNft), Mode::Ipvs) => {
            "Stale rules: kube-proxy does not clean iptables-mode leftovers when it starts in IPVS mode: the KUBE-SVC-*/KUBE-SEP-* chains stay in the nat table. Run `kube-proxy --cleanup` before switching, or reboot the node.".into()
        }
        _ => "Stale rules: kube-proxy cleans nftables leftovers when it starts in iptables or IPVS mode, but not iptables leftovers in IPVS mode nor IPVS leftovers in iptables mode: run `kube-proxy --cleanup` before switching between those two, or reboot the node.".into(),
    }
}

/// The folklore this tool exists to test, each with the measured answer.
fn folklore(out: &mut String, analysis: &Analysis, costs: &[ModeCost], n: f64) {
    let _ = writeln!(out, "\nfolklore against measurement:");
    let get = |m: Mode| analysis.modes.iter().find(|x| x.mode == m);
    let cost = |m: Mode| costs.iter().find(|c| c.mode == m);

    // "10,000 services = 100 ms per packet" (quoted for iptables mode).
    const FOLKLORE_N: f64 = 10_000.0;
    const FOLKLORE_NS: f64 = 100e6;
    let iptables = cost(Mode::IptablesLegacy).or_else(|| cost(Mode::IptablesNft));
    match iptables {
        Some(c) => {
            let at = c.fit.predict(FOLKLORE_N);
            let established =
                get(c.mode).and_then(|m| m.established_packet_p50.as_ref()).map(|f| f.non_decreasing().predict(FOLKLORE_N));
            let _ = writeln!(
                out,
                "  \"10,000 services = 100 ms per packet\": measured {} predicts {} per new connection at 10,000 services{}, {}{}.",
                c.mode,
                human_ns(at),
                if c.fit.extrapolates_to(FOLKLORE_N) { " (extrapolated)" } else { "" },
                if at > 0.0 { format!("the folklore figure is {} that", ratio(FOLKLORE_NS / at)) } else { "nothing like the folklore".into() },
                established.map_or(String::new(), |e| format!("; an established packet pays {} (conntrack skips the service rules)", human_ns(e))),
            );
        }
        None => {
            let _ = writeln!(out, "  \"10,000 services = 100 ms per packet\": iptables mode was not measured at two or more N.");
        }
    }

    // "iptables is O(n), IPVS is O(1)" and "nftables is O(1)".
    for (mode, claim) in [
        (Mode::IptablesLegacy, "\"iptables is O(n)\""),
        (Mode::IptablesNft, "\"iptables is O(n)\" (nft backend)"),
        (Mode::Ipvs, "\"IPVS is O(1)\""),
        (Mode::Nftables, "\"nftables is O(1) (verdict maps)\""),
    ] {
        let Some(m) = get(mode) else { continue };
        let _ = writeln!(out, "  {claim}: {}", growth_verdict(m, n));
    }
}

/// "12.3 ns per service, grows measurably with N: 10× N costs 1.8× as much"
fn growth_verdict(m: &ModeAnalysis, n: f64) -> String {
    let Some(f) = &m.new_connection_p50 else {
        return format!("{} was measured at one service count only: too few points to tell", m.mode);
    };
    let shape = match f.slope_significant() {
        _ if f.slope < 0.0 => "falling, which is noise: treated as flat",
        Some(true) => "grows measurably with N",
        Some(false) => "not distinguishable from flat (the slope is within two standard errors of zero)",
        None => "too few points to tell growth from noise",
    };
    let flat = f.non_decreasing();
    let (lo, hi) = (flat.predict(n), flat.predict(10.0 * n));
    let growth = if lo > 0.0 { format!("; by the line, 10× N costs {} as much", ratio(hi / lo)) } else { String::new() };
    format!(
        "measured {} changes by {} ns per service ({} per 1,000 services, R² {:.2}), {shape}{growth}",
        m.mode,
        significant(f.slope),
        human_ns(f.slope * 1000.0),
        f.r_squared
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        analysis::{analyze, tests::fixture},
        results::Point,
    };

    /// A sweep where `winner` has the flattest line: each mode's transit p50
    /// per new connection is `base + slope · N` at N = 10, 100, 1000 (its
    /// netfilter hook time three times that, so advice that followed it
    /// instead would show).
    fn sweep_won_by(winner: Mode) -> Results {
        let template = fixture("small.json");
        let proto: Point = template.points[0].clone();
        let mut points = Vec::new();
        for mode in Mode::ALL {
            let (base, slope) = if mode == winner { (400.0, 0.05) } else { (600.0, 1.0 + 0.25 * mode as u8 as f64) };
            for n in [10u32, 100, 1000] {
                let mut p = proto.clone();
                p.mode = mode;
                p.services = n;
                p.service_ports = 2 * n;
                let cost = (base + slope * f64::from(n)).round() as u64;
                // The basis (transit) carries the line; the lookup is part of it.
                let summary = |p50: u64| crate::statistics::Summary {
                    count: 200,
                    mean_ns: p50 as f64,
                    p50_ns: p50,
                    p90_ns: p50 * 3 / 2,
                    p99_ns: p50 * 2,
                    max_ns: p50 * 3,
                };
                p.transit_new_connection = summary(cost);
                p.transit_established_packet = summary(60);
                p.lookup_new_connection = Some(crate::results::LookupFigure {
                    what: mode.lookup().describe(),
                    mechanism: crate::probes::Mechanism::Kprobe,
                    summary: summary(cost / 2),
                });
                p.per_new_connection.p50_ns = cost * 3;
                p.per_new_connection.p99_ns = cost * 6;
                p.per_established_packet.p50_ns = 60;
                p.program_ms = 1.0 + f64::from(n) * (0.1 + 0.1 * mode as u8 as f64);
                points.push(p);
            }
        }
        Results { points, skipped: Vec::new(), ..template }
    }

    fn advice(r: &Results, node: NodeFacts) -> String {
        render(r, &analyze(r), "fixture.json", &node).unwrap()
    }

    #[test]
    fn advice_when_each_mode_wins() {
        for (winner, current, name) in [
            (Mode::IptablesLegacy, Mode::Ipvs, "advise_iptables_legacy_wins"),
            (Mode::IptablesNft, Mode::IptablesLegacy, "advise_iptables_nft_wins"),
            (Mode::Ipvs, Mode::IptablesLegacy, "advise_ipvs_wins"),
            (Mode::Nftables, Mode::IptablesLegacy, "advise_nftables_wins"),
        ] {
            let node = NodeFacts { mode: Some(current), service_ports: Some(4000), origin: None };
            let text = advice(&sweep_won_by(winner), node);
            let expected = if winner == Mode::Ipvs { Mode::Ipvs } else { winner };
            assert!(text.contains(&format!("recommended: {expected} ")), "{text}");
            insta::assert_snapshot!(name, text);
        }
    }

    #[test]
    fn advice_on_the_vm_fixture() {
        let text = advice(&fixture("sweep-6.12-tcg.json"), NodeFacts::default());
        assert!(text.contains("emulated"), "{text}");
        insta::assert_snapshot!("advise_vm_fixture", text);
    }

    #[test]
    fn nftables_wins_a_tie() {
        let fit = |base: f64| LinearFit::of(&[(10.0, base), (100.0, base), (1000.0, base)]).unwrap();
        let cost = |mode, at_n: f64| ModeCost { mode, at_n, at_10n: at_n, at_n_stderr: None, fit: fit(at_n) };
        // iptables-legacy is 5 % cheaper: within noise, so nftables.
        let r = recommend(&[cost(Mode::IptablesLegacy, 950.0), cost(Mode::Nftables, 1000.0)], 1000.0).unwrap();
        assert_eq!(r.mode, Mode::Nftables);
        assert!(r.reason.contains("within noise"), "{}", r.reason);
        // 30 % cheaper is not noise.
        let r = recommend(&[cost(Mode::IptablesLegacy, 700.0), cost(Mode::Nftables, 1000.0)], 1000.0).unwrap();
        assert_eq!(r.mode, Mode::IptablesLegacy);
        // IPVS within noise of another mode loses the tie.
        let r = recommend(&[cost(Mode::Ipvs, 950.0), cost(Mode::IptablesNft, 1000.0)], 1000.0).unwrap();
        assert_eq!(r.mode, Mode::IptablesNft);
        assert!(r.reason.contains("deprecated"), "{}", r.reason);
    }

    #[test]
    fn migration_paths_name_their_stale_rules() {
        let mut out = String::new();
        migration(&mut out, Some(Mode::Ipvs), Mode::IptablesLegacy);
        assert!(out.contains("kube-proxy --cleanup") && out.contains("kube-ipvs0"), "{out}");
        let mut out = String::new();
        migration(&mut out, Some(Mode::IptablesLegacy), Mode::Nftables);
        assert!(out.contains("deletes iptables and IPVS leftovers itself"), "{out}");
        let mut out = String::new();
        migration(&mut out, Some(Mode::Nftables), Mode::Nftables);
        assert!(out.contains("nothing to change"), "{out}");
    }

    #[test]
    fn no_points_is_an_error_naming_the_file() {
        let mut r = fixture("small.json");
        r.points.clear();
        let e = render(&r, &analyze(&r), "empty.json", &NodeFacts::default()).unwrap_err();
        assert!(e.to_string().starts_with("results file empty.json holds no measured points"), "{e}");
    }
}
