//! `cargo xtask`: pathcost's developer and CI driver.
//!
//! It installs the toolchain pieces the eBPF build needs, builds the tracer and its
//! VM test binaries, and boots Debian kernels under qemu to run them where kprobes
//! and IPVS exist (the host kernel has neither; see shared/ENVIRONMENT.md).

mod bench;
mod build;
mod cmd;
mod lint;
mod run;
mod setup;
mod test;
mod vm;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Build, set up and test pathcost"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what the build and the test VM need (apt packages, the pinned eBPF nightly,
    /// bpf-linker); each step is skipped quickly when already present.
    Setup,
    /// Build `pathcost` and the VM test binaries, and print their paths.
    Build(build::Options),
    /// Boot a test VM and run `pathcost` inside it, streaming its output.
    Run(run::Options),
    /// Run the host tests, then the VM suite on each kernel, and summarise.
    Test(test::Options),
    /// clippy on every crate, the eBPF programs included (with the pinned nightly
    /// for the BPF target), warnings as errors; `test` runs it too.
    Lint,
    /// Measure pathcost's own overhead in the VM on each kernel.
    Bench(bench::Options),
    /// Debugging aid: boot a kernel and run a shell command in the VM instead of
    /// pathcost (nothing is built), e.g. `cargo xtask vm-exec --kernel 6.1 -- 'nft list ruleset'`.
    VmExec(vm::ExecOptions),
}

/// Where the workspace and its build output live.
pub struct Workspace {
    /// Absolute, canonical: the VM mounts the 9p share at this same path, so relative
    /// paths given to pathcost mean the same thing inside and outside.
    pub root: PathBuf,
    pub target: PathBuf,
}

impl Workspace {
    fn locate() -> Result<Self> {
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest_dir
            .parent()
            .context("xtask's manifest directory has no parent")?;
        let root = root
            .canonicalize()
            .with_context(|| format!("failed to resolve {}", root.display()))?;
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => root.join(dir),
            None => root.join("target"),
        };
        Ok(Self { root, target })
    }

    /// For messages: paths inside the workspace read better relative to it.
    pub fn relative<'a>(&self, path: &'a Path) -> &'a Path {
        path.strip_prefix(&self.root).unwrap_or(path)
    }

    /// Downloaded kernels, their extracted trees and the initramfs images.
    pub fn vm_cache(&self) -> PathBuf {
        self.target.join("vm-cache")
    }
}

/// `cargo install` puts bpf-linker in ~/.cargo/bin, which a fresh CI shell (or a
/// login without rustup's profile snippet) may not have on PATH; aya-build looks it
/// up there, so every child process must see it.
fn ensure_cargo_bin_on_path() {
    let Some(home) = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
    else {
        return;
    };
    let bin = home.join("bin");
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|dir| dir == bin) {
        return;
    }
    let mut joined: Vec<PathBuf> = vec![bin];
    joined.extend(std::env::split_paths(&path));
    if let Ok(joined) = std::env::join_paths(joined) {
        // Single-threaded at this point, before any child is spawned.
        std::env::set_var("PATH", joined);
    }
}

/// The `cargo` that launched us, so nested builds use the same toolchain.
pub fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    ensure_cargo_bin_on_path();
    let result = Workspace::locate().and_then(|ws| match cli.command {
        Command::Setup => setup::run(),
        Command::Build(options) => build::run(&ws, &options),
        Command::Run(options) => run::run(&ws, &options),
        Command::Test(options) => test::run(&ws, &options),
        Command::Lint => setup::run().and_then(|()| lint::run(&ws)),
        Command::Bench(options) => bench::run(&ws, &options),
        Command::VmExec(options) => vm::exec(&ws, &options),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}
