//! `pathcost`: parse, validate, measure, report.

use std::{
    io::Write as _,
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use tracer::{
    probes::{attach::AttachRequest, Backend, SiteList},
    report::{self, Format},
    selftest,
    sweep::SweepOptions,
    synthesis::{cluster::Protocol, ipvs::Scheduler, program::Mode, traffic::Pace},
    trace::{stop_signal, Session, SessionOptions},
};

/// What a packet pays, in nanoseconds measured inside the kernel, to find
/// its Kubernetes service under kube-proxy's iptables, IPVS or nftables mode.
///
/// pathcost times the kernel functions that do the lookup (nf_hook_slow,
/// ipt_do_table, nft_do_chain, the IPVS input hook, ip_vs_schedule) with
/// eBPF probes and reports per-call and per-packet costs. It needs root (or
/// CAP_BPF + CAP_PERFMON) and a kernel with BTF, and it never changes the
/// node's rules.
#[derive(Parser, Debug)]
#[command(name = "pathcost", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Attach to the live kernel and time real traffic.
    ///
    /// Prints a live summary every --interval and a final report per probe
    /// site, netfilter hook and table/chain: count, mean, p50, p90, p99 and
    /// max in ns, raw and corrected for the probes' own cost, which mechanism
    /// each site uses, and every loss counter. Stops after --duration, on
    /// Ctrl-C or on SIGTERM, and detaches everything.
    Trace {
        /// How long to trace (e.g. 30s, 5m, 500ms); default: until Ctrl-C.
        #[arg(long, short, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Probe sites, comma-separated (nf_hook_slow, ipt_do_table,
        /// nft_do_chain, ip_vs_in, ip_vs_schedule, ip_vs_conn_in_get).
        /// Default: all but ip_vs_conn_in_get, skipping those whose module
        /// is not loaded. Named sites must all be available.
        #[arg(long)]
        sites: Option<SiteList>,
        /// Print a live summary this often (e.g. 5s); 0 disables it.
        #[arg(long, short, value_parser = parse_duration, default_value = "5s")]
        interval: Duration,
        /// Probe mechanism: best available per site, or only one kind.
        #[arg(long, value_enum, default_value_t = Backend::Auto)]
        backend: Backend,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Write the final report here instead of stdout ("-" is stdout).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Skip measuring the probes' own cost at start-up.
        #[arg(long)]
        no_calibrate: bool,
        /// Keep only packets of this network namespace, given as a path
        /// (/proc/1/ns/net is the host's, /run/netns/NAME a named one).
        #[arg(long)]
        netns: Option<PathBuf>,
    },
    /// Measure cost against the number of services, per kube-proxy mode.
    ///
    /// For each mode and service count: build client, node and backend
    /// network namespaces (bound to this process; nothing outside them
    /// changes), program kube-proxy-shaped rules for N services into the
    /// node, send new connections to random services, "miss" traffic and
    /// packets on established flows, and record the netfilter time per
    /// packet and per probed call. Results are written after every point.
    Sweep {
        /// Modes, comma-separated: iptables-legacy, iptables-nft, ipvs, nftables.
        #[arg(long, value_delimiter = ',', default_value = "iptables-legacy,iptables-nft,ipvs,nftables")]
        modes: Vec<Mode>,
        /// Service counts, comma-separated (1 to 65,000 each).
        #[arg(long, value_delimiter = ',', default_value = "10,100,1000", value_parser = clap::value_parser!(u32).range(1..=65_000))]
        services: Vec<u32>,
        /// Endpoints per service.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1000))]
        endpoints: u32,
        /// Protocols each service exposes (one service port each).
        #[arg(long, value_delimiter = ',', default_value = "udp,tcp", value_parser = parse_protocol)]
        protocols: Vec<Protocol>,
        /// New connections per point, to services drawn uniformly at random.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=50_000))]
        connections: u32,
        /// New flows per point to an address no service owns.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=50_000))]
        miss: u32,
        /// Established UDP flows per point ...
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=5_000))]
        established_flows: u32,
        /// ... and packets sent on each once it is established.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        packets_per_flow: u32,
        /// IPVS scheduler (rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh, twos).
        #[arg(long, default_value = "rr")]
        ipvs_scheduler: Scheduler,
        #[arg(long, value_enum, default_value_t = Backend::Auto)]
        backend: Backend,
        /// Packets per second at most in each phase (0: as fast as possible).
        #[arg(long, default_value_t = 0)]
        rate: u32,
        /// Longest a traffic phase may run.
        #[arg(long, value_parser = parse_duration, default_value = "60s")]
        phase_time: Duration,
        /// Seed for service order and target choice (same seed, same run).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Directory for results.json (written after every point).
        #[arg(long, short, default_value = "target/pathcost-sweep")]
        output: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Check on this kernel that the probes see real packets.
    ///
    /// Builds a private network namespace with an iptables rule (nothing
    /// outside it changes), sends UDP packets through it while tracing, and
    /// fails unless nf_hook_slow entry/exit pairs were seen for at least
    /// every packet the rule counted, with no unmatched exit.
    Selftest {
        /// Packets to send.
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        packets: u64,
        #[arg(long, value_enum, default_value_t = Backend::Auto)]
        backend: Backend,
        /// iptables command used inside the namespace.
        #[arg(long, default_value = "iptables-legacy")]
        iptables: String,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    match s {
        "udp" => Ok(Protocol::Udp),
        "tcp" => Ok(Protocol::Tcp),
        _ => Err(format!("unknown protocol '{s}' (use udp or tcp)")),
    }
}

/// Parses `500ms`, `30s`, `5m`, `1h` or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (examples: 500ms, 30s, 5m)"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("unknown unit '{unit}' in '{s}' (use ms, s, m or h)")),
    };
    if !secs.is_finite() || !(0.0..=7.0 * 86400.0).contains(&secs) {
        return Err(format!("'{s}' is out of range (0 to 7 days)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Inode of a network namespace file, which is what the probes record.
fn netns_inode(path: &std::path::Path) -> Result<u32> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot open network namespace {}", path.display()))?;
    u32::try_from(meta.ino()).with_context(|| format!("{} is not a namespace file", path.display()))
}

fn write_output(text: &str, output: Option<&PathBuf>) -> Result<()> {
    match output {
        Some(p) if p.as_os_str() != "-" => {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("failed to create {}", dir.display()))?;
            }
            std::fs::write(p, text).with_context(|| format!("failed to write {}", p.display()))
        }
        _ => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
            Ok(())
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Trace { duration, sites, interval, backend, format, output, no_calibrate, netns } => {
            let explicit = sites.is_some();
            let sites = sites.map_or_else(
                || tracer::probes::SITES.iter().filter(|s| s.default).collect(),
                |l| l.0,
            );
            let interval = (!interval.is_zero()).then_some(interval);
            let mut session = Session::start(&SessionOptions {
                request: AttachRequest { sites, explicit, backend, emit_events: true },
                calibrate: !no_calibrate,
                interval,
                netns: netns.as_deref().map(netns_inode).transpose()?,
                keep_calls: false,
            })?;
            for s in session.sites() {
                eprintln!(
                    "pathcost: {} -> {}",
                    s.site,
                    s.mechanism.map_or_else(|| s.notes.join("; "), |m| m.to_string())
                );
            }
            session
                .collect_until(stop_signal(duration), interval, |snapshot| {
                    eprint!("{}", report::table::render(snapshot));
                })
                .await?;
            let (report, _) = session.finish()?;
            write_output(&report::render(&report, format)?, output.as_ref())?;
            warn_about_losses(&report);
            Ok(())
        }
        Command::Sweep {
            modes,
            services,
            endpoints,
            protocols,
            connections,
            miss,
            established_flows,
            packets_per_flow,
            ipvs_scheduler,
            backend,
            rate,
            phase_time,
            seed,
            output,
            format,
        } => {
            tracer::capabilities::require_tracing_privileges()?;
            let opts = SweepOptions {
                modes,
                services,
                endpoints,
                protocols,
                connections,
                miss,
                established_flows,
                packets_per_flow,
                scheduler: ipvs_scheduler,
                backend,
                pace: Pace { rate, max_time: phase_time },
                seed,
                output: Some(output.clone()),
            };
            let results = tracer::sweep::run(&opts, |line| eprintln!("sweep: {line}")).await?;
            let text = match format {
                Format::Table => report::sweep_table(&results),
                Format::Json => serde_json::to_string_pretty(&results)? + "\n",
            };
            write_output(&text, None)?;
            eprintln!("sweep: results in {}", output.join("results.json").display());
            Ok(())
        }
        Command::Selftest { packets, backend, iptables, format } => {
            let outcome = selftest::run(backend, packets, &iptables).await?;
            write_output(&report::render(&outcome.report, format)?, None)?;
            eprintln!(
                "selftest: sent {} packets, the rule counted {}, nf_hook_slow paired {} calls",
                outcome.packets_sent, outcome.rule_packets, outcome.nf_hook_slow_pairs
            );
            outcome.check()?;
            eprintln!("selftest: ok");
            Ok(())
        }
    }
}

/// Specific, actionable warnings on stderr.
fn warn_about_losses(r: &report::TraceReport) {
    let l = &r.losses;
    if l.ring_reserve_failures > 0 {
        eprintln!(
            "warning: the ring buffer dropped {} events; per-call percentiles miss them, the in-kernel counts do not (see in_kernel)",
            l.ring_reserve_failures
        );
    }
    if l.unmatched_exits + l.orphaned_frames > 0 {
        eprintln!(
            "warning: {} exits found no entry and {} entries lost their exit (kretprobe misses?); their calls are not in the figures",
            l.unmatched_exits, l.orphaned_frames
        );
    }
    if l.depth_overflows > 0 {
        eprintln!("warning: {} calls nested deeper than the probe stack and were not timed", l.depth_overflows);
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed pipe (pathcost ... | head) is not an error worth a message.
            if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) {
                return ExitCode::SUCCESS;
            }
            eprintln!("pathcost: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_reject_garbage() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("9999h").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
