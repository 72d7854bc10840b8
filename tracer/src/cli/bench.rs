//! `pathcost bench`: what pathcost itself costs on this kernel.

use std::path::PathBuf;

use anyhow::Result;
use tracer::{probes::Backend, report::Format};

use super::{check_outputs, write_output};

/// Measure pathcost's own overhead on this kernel.
///
/// In private namespaces with kube-proxy-shaped iptables rules: the time a
/// new connection takes with probes detached, attached and detached again
/// (added ns per packet and the ratio; under emulation trust the ratio),
/// then a flood with probes attached: events per second delivered to
/// userspace and every event lost.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Services programmed in the node namespace.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    services: u32,
    /// New connections per timed phase.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(10..=12_000))]
    packets: u32,
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    backend: Backend,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Also write the JSON report here.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

pub async fn run(args: Args) -> Result<()> {
    // Before minutes of measuring, and before the privilege check, as
    // `trace` does: a typo is reported whoever runs it.
    check_outputs(args.output.as_deref(), &[])?;
    tracer::capabilities::require_tracing_privileges()?;
    let r = tracer::bench::run(args.backend, args.services, args.packets).await?;
    let json = serde_json::to_string_pretty(&r)? + "\n";
    if let Some(path) = &args.output {
        write_output(&json, Some(path))?;
    }
    let text = match args.format {
        Format::Json => json,
        Format::Table => {
            let f = &r.flood;
            format!(
                "pathcost bench: kernel {}, {} services, {} new connections per phase, {}\n\
                 per new connection (sender's wall time): detached {:.0} ns, attached {:.0} ns, detached again {:.0} ns\n\
                 probes add {:.0} ns per packet (x{:.2}), {:.1} probed calls per packet\n\
                 flood: {} packets in {:.2} s, {:.0} events/s delivered, ring reserve failures {}, unmatched exits {}\n",
                r.kernel,
                r.services,
                r.packets_per_phase,
                r.backend,
                r.detached_ns,
                r.attached_ns,
                r.detached_again_ns,
                r.added_ns_per_packet,
                r.overhead_ratio,
                r.calls_per_packet,
                f.packets,
                f.seconds,
                f.events_per_second,
                f.losses.ring_reserve_failures,
                f.losses.unmatched_exits,
            )
        }
    };
    write_output(&text, None)
}
