//! `pathcost`: parse, validate, measure, report. Each subcommand lives in
//! its own module under `cli/`.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `pathcost --version`: the release and the toolchain that built the embedded
/// eBPF programs (pinned in ebpf-toolchain.toml; the kind workflow checks it).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (eBPF programs built by ",
    env!("PATHCOST_EBPF_RUSTC"),
    ", LLVM ",
    env!("PATHCOST_EBPF_LLVM"),
    ")"
);

/// What a packet pays, in nanoseconds measured inside the kernel, to find
/// its Kubernetes service under kube-proxy's iptables, IPVS or nftables mode.
///
/// pathcost times the kernel functions that do the lookup (nf_hook_slow,
/// ipt_do_table, nft_do_chain, the IPVS input hook, ip_vs_schedule) with
/// eBPF probes and reports per-call and per-packet costs. It needs root (or
/// CAP_BPF + CAP_PERFMON) and a kernel with BTF, and it never changes the
/// node's rules.
#[derive(Parser, Debug)]
#[command(name = "pathcost", version = VERSION, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Detect(cli::detect::Args),
    Trace(cli::trace::Args),
    Serve(cli::serve::Args),
    Sweep(cli::sweep::Args),
    Rules(cli::rules::Args),
    Report(cli::report::Args),
    Advise(cli::advise::Args),
    Selftest(cli::selftest::Args),
    Bench(cli::bench::Args),
}

#[tokio::main]
async fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let result = match Cli::parse().command {
        Command::Detect(args) => cli::detect::run(args).await,
        Command::Trace(args) => cli::trace::run(args).await,
        Command::Serve(args) => cli::serve::run(args).await,
        Command::Sweep(args) => cli::sweep::run(args).await,
        Command::Rules(args) => cli::rules::run(args).await,
        Command::Report(args) => cli::report::run(args).await,
        Command::Advise(args) => cli::advise::run(args).await,
        Command::Selftest(args) => cli::selftest::run(args).await,
        Command::Bench(args) => cli::bench::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed pipe (pathcost ... | head) is not an error worth a message.
            let broken_pipe = e.chain().any(|cause| {
                cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
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
    fn cli_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
