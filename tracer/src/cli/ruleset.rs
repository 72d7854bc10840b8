//! Flags that shape a sweep point's ruleset, shared by `sweep` and `rules`:
//! declared once, so the two commands build the same cluster from the same
//! flags with the same defaults.

use tracer::synthesis::{cluster::Protocol, ipvs::Scheduler};

/// The service counts either command accepts.
pub fn service_count() -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(1..=65_000)
}

#[derive(clap::Args, Debug, Clone)]
pub struct RulesetArgs {
    /// Endpoints per service.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub endpoints: u32,
    /// Protocols each service exposes, one service port each (udp, tcp).
    #[arg(long, value_delimiter = ',', default_value = "udp,tcp", value_parser = parse_protocol)]
    pub protocols: Vec<Protocol>,
    /// IPVS scheduler: rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh, twos.
    #[arg(long, default_value = "rr")]
    pub ipvs_scheduler: Scheduler,
    /// Seed for the random choices: the order of KUBE-SERVICES and, in a
    /// sweep, the services traffic goes to (same seed, same run).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    match s {
        "udp" => Ok(Protocol::Udp),
        "tcp" => Ok(Protocol::Tcp),
        _ => Err(format!("unknown protocol '{s}' (use udp or tcp)")),
    }
}
