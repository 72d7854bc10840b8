//! `pathcost selftest`: check on this kernel that the probes see packets.

use anyhow::Result;
use tracer::{
    report::{export_all, Document, DocumentKind, ExportFormat, ExportTarget},
    selftest,
};

use super::{probing::MechanismArgs, FormatOf};

/// Check on this kernel that the probes see real packets.
///
/// Builds a private network namespace with an iptables rule (nothing
/// outside it changes), sends UDP packets through it while tracing, and
/// fails unless nf_hook_slow entry/exit pairs were seen for at least
/// every packet the rule counted, with no unmatched exit.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Packets to send, each from its own source port (a new connection).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=45_000))]
    packets: u64,
    #[command(flatten)]
    mechanism: MechanismArgs,
    /// iptables command used inside the namespace.
    #[arg(long, default_value = "iptables-legacy")]
    iptables: String,
    /// Format of the trace report printed before the verdict.
    #[arg(long, value_parser = FormatOf(DocumentKind::Trace), default_value = "table")]
    format: ExportFormat,
}

pub async fn run(args: Args) -> Result<()> {
    let outcome = selftest::run(args.mechanism.backend, args.packets, &args.iptables).await?;
    export_all(&Document::Trace(&outcome.report), &[ExportTarget::stdout(args.format)])?;
    eprintln!(
        "selftest: sent {} packets, the rule counted {}, nf_hook_slow paired {} calls",
        outcome.packets_sent, outcome.rule_packets, outcome.nf_hook_slow_pairs
    );
    outcome.check()?;
    eprintln!("selftest: ok");
    Ok(())
}
