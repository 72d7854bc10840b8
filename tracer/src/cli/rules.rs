//! `pathcost rules`: the ruleset one sweep point loads, printed as the exact
//! inputs the sweep feeds to `iptables-restore`, `ip -batch`, `ipset restore`,
//! `ipvsadm -R` and `nft -f`, so it can be read, audited or replayed by hand.
//! The text comes from the functions the sweep programs with
//! ([`tracer::synthesis::program::steps`]) and the cluster from the one the
//! sweep builds ([`tracer::sweep::point_cluster`]), so the two cannot drift.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use tracer::{
    report::{check_targets, export_all, Document, DocumentKind, ExportFormat, ExportTarget},
    synthesis::program::{steps, Mode},
};

use super::{
    export_target_of,
    ruleset::{service_count, RulesetArgs},
    targets, FormatOf,
};

/// Print the rules a sweep point loads, exactly as the sweep feeds them to
/// the tools.
///
/// `pathcost sweep` programs each point by running, in the node namespace,
/// one or more tools with generated text on stdin: iptables-legacy-restore
/// or iptables-nft-restore for the iptables modes; ip -batch, ipset restore,
/// iptables-legacy-restore --noflush and ipvsadm -R (then a sysctl) for
/// IPVS; nft -f for nftables. This command prints those inputs for one
/// mode and service count, in the order they are applied, each under a
/// comment line naming the command it is fed to. Same flags and seed as the
/// sweep, same rules. Needs no privileges and changes nothing.
///
/// Examples:
///
///   pathcost rules --mode iptables-legacy --services 3
///
///   pathcost rules --mode nftables --services 1000 --endpoints 5 | less
///
///   # check an input with the real tool, in a throwaway network namespace:
///
///   pathcost rules --mode nftables --services 10 --format json | jq -r '.[0].input' | unshare -n nft -c -f -
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Proxy mode, as `pathcost sweep --modes` names it: iptables-legacy,
    /// iptables-nft, ipvs, nftables.
    #[arg(long)]
    mode: Mode,
    /// Number of services (1 to 65,000): one value of sweep's --services.
    #[arg(long, value_parser = service_count())]
    services: u32,
    #[command(flatten)]
    ruleset: RulesetArgs,
    /// table (or text): each input under a `# COMMAND` line; json: a list
    /// of {"tool", "args", "input"} objects, in the order they are applied.
    #[arg(long, value_parser = FormatOf(DocumentKind::Rules), default_value = "table")]
    format: ExportFormat,
    /// Write to FILE instead of stdout ("-" is stdout).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Also write FORMAT (table, json) to PATH ("-" is stdout); repeatable.
    #[arg(long, value_name = "FORMAT=PATH", value_parser = export_target_of(DocumentKind::Rules))]
    export: Vec<ExportTarget>,
}

pub async fn run(args: Args) -> Result<()> {
    // Before building up to 65,000 services' rules.
    let targets = targets(args.format, args.output.clone(), args.export.clone());
    check_targets(DocumentKind::Rules, &targets)?;
    let r = &args.ruleset;
    let cluster = tracer::sweep::point_cluster(args.services, r.endpoints, &r.protocols, r.seed)
        .with_context(|| format!("cannot build {} services × {} endpoints", args.services, r.endpoints))?;
    let steps = steps(args.mode, &cluster, r.ipvs_scheduler);
    export_all(&Document::Rules { invocation: &invocation(&args), steps: &steps }, &targets)
}

/// The command line that prints this point's rules, defaults spelled out,
/// so the output says which point it is.
fn invocation(args: &Args) -> String {
    let r = &args.ruleset;
    let protocols: Vec<&str> = r.protocols.iter().map(|p| p.as_str()).collect();
    format!(
        "pathcost rules --mode {} --services {} --endpoints {} --protocols {} --seed {}{}",
        args.mode,
        args.services,
        r.endpoints,
        protocols.join(","),
        r.seed,
        if args.mode == Mode::Ipvs { format!(" --ipvs-scheduler {}", r.ipvs_scheduler) } else { String::new() },
    )
}
