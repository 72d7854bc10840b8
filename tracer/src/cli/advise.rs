//! `pathcost advise`: which kube-proxy mode to run, from measured numbers.

use std::path::PathBuf;

use anyhow::{bail, Result};
use tracer::{
    analysis::{self, advise::NodeFacts},
    detection::{self, proxy_mode::KubeProxyMode, IptablesFlavour},
    report::{check_targets, export_all, Document, DocumentKind, ExportFormat, ExportTarget},
    results::Results,
    synthesis::program::Mode,
};

use super::{export_target_of, report::print_warnings, targets, FormatOf};

/// Which kube-proxy mode to run, from measured numbers.
///
/// From a sweep's results: what each mode costs per new connection at the
/// node's size and at ten times that (from each mode's least-squares line,
/// with the nearest measured point), the recommended mode and why, the
/// KubeProxyConfiguration that selects it, migration steps and their risks
/// (kernel modules, conntrack, rules the previous mode leaves behind), and
/// the folklore figures set against the measured ones.
///
/// The node is described by --live (read-only detection, as `pathcost
/// detect` does it) and/or --mode and --services, which win over what
/// --live finds. Without either, the largest measured size is used.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The results.json a sweep wrote.
    #[arg(value_name = "RESULTS.json", default_value = "target/pathcost-sweep/results.json")]
    results: PathBuf,
    /// Read the node's mode and service-port count from the node itself
    /// (read-only; needs root to see every table).
    #[arg(long)]
    live: bool,
    /// The mode the node runs now: iptables-legacy, iptables-nft, ipvs or nftables.
    #[arg(long)]
    mode: Option<Mode>,
    /// The node's number of service ports (a service with two ports counts
    /// twice), as `pathcost detect` reports it.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    services: Option<u32>,
    /// Format of the advice (plain text for now; the value is taken so
    /// that every report command picks its output the same way).
    #[arg(long, value_parser = FormatOf(DocumentKind::Advice), default_value = "table")]
    format: ExportFormat,
    /// Write the advice here ("-" is stdout).
    #[arg(long, short, default_value = "-")]
    output: PathBuf,
    /// Also write FORMAT to PATH ("-" is stdout); repeatable.
    #[arg(long, value_name = "FORMAT=PATH", value_parser = export_target_of(DocumentKind::Advice))]
    export: Vec<ExportTarget>,
}

pub async fn run(args: Args) -> Result<()> {
    let targets = targets(args.format, Some(args.output), args.export);
    check_targets(DocumentKind::Advice, &targets)?;
    let results = Results::load(&args.results)?;
    // Detection runs only for what the flags leave open.
    let detect = args.live && (args.mode.is_none() || args.services.is_none());
    let mut node = if detect { live_node(args.mode, args.services.is_none())? } else { NodeFacts::default() };
    if args.mode.is_some() || args.services.is_some() {
        node.origin = Some(if detect { "detected on this node and given on the command line" } else { "given on the command line" }.into());
    }
    node.mode = args.mode.or(node.mode);
    node.service_ports = args.services.or(node.service_ports);
    let analysis = analysis::analyze(&results);
    let source = args.results.display().to_string();
    // A refusal (no points, no cost line) is the run's one message, not an
    // exporter's failure.
    analysis::advise::basis(&results, &analysis, &source, &node)?;
    export_all(&Document::Advice { results: &results, analysis: &analysis, source: &source, node: &node }, &targets)?;
    print_warnings(&analysis.warnings);
    Ok(())
}

/// The node's mode (unless `mode` is given) and service-port count (when
/// `need_ports`), as detection finds them.
fn live_node(mode: Option<Mode>, need_ports: bool) -> Result<NodeFacts> {
    let detection = detection::detect()?;
    let found = &detection.node;
    let flavour = found.iptables_backend.active.unwrap_or(found.iptables_backend.wrapper_choice);
    let detected = match found.proxy_mode.mode {
        Some(KubeProxyMode::Iptables) => Some(match flavour {
            IptablesFlavour::Legacy => Mode::IptablesLegacy,
            IptablesFlavour::Nft => Mode::IptablesNft,
        }),
        Some(KubeProxyMode::Ipvs) => Some(Mode::Ipvs),
        Some(KubeProxyMode::Nftables) => Some(Mode::Nftables),
        Some(KubeProxyMode::Kernelspace) | None => None,
    };
    let Some(mode) = mode.or(detected) else {
        bail!(
            "no Linux kube-proxy mode found on this node ({}): pass --mode and --services instead of --live",
            found.proxy_mode.endpoint
        );
    };
    // Service ports in the active mode's own rules.
    let service_ports = match mode {
        Mode::IptablesLegacy | Mode::IptablesNft => {
            found.services.iptables.iter().find(|s| s.backend == flavour).map(|s| s.rules.service_ports)
        }
        Mode::Ipvs => found.services.ipvs.as_ref().and_then(|i| i.cluster_ip_set_entries.or(i.virtual_servers)),
        Mode::Nftables => found.services.nftables.iter().find(|n| n.family == "ip").map(|n| n.service_chains),
    };
    let service_ports = service_ports.filter(|n| *n > 0).map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    if need_ports && service_ports.is_none() {
        bail!("no {mode} service ports could be counted on this node (not root, or no services?): pass --services");
    }
    Ok(NodeFacts { mode: Some(mode), service_ports, origin: Some("detected on this node".into()) })
}
