//! `cargo xtask lint`: clippy on every crate of the workspace, warnings as
//! errors, and part of `cargo xtask test`'s host steps.
//!
//! `cargo clippy --workspace` only sees tracer-ebpf as a host crate, where
//! its programs are compiled out (`cfg(target_arch = "bpf")`), so the eBPF
//! programs get a second run: the pinned nightly, the BPF target and
//! `-Z build-std=core`, as tracer/build.rs builds them through aya-build.
//! The workspace's `[workspace.lints]` apply to both runs; among them
//! `undocumented_unsafe_blocks`, which the programs' unsafe blocks most need.

use std::process::Command;

use anyhow::Result;

use crate::{cmd, setup, Workspace};

pub fn run(ws: &Workspace) -> Result<()> {
    println!("lint: clippy on the workspace (host)");
    cmd::run(Command::new(crate::cargo()).current_dir(&ws.root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    println!("lint: clippy on the eBPF programs (bpfel-unknown-none)");
    cmd::run(&mut ebpf_clippy(ws, setup::pins()?.rustc))
}

/// clippy for tracer-ebpf's programs, with what aya-build gives their build:
/// the target, `build-std`, and the `bpf_target_arch` cfg that picks the
/// pt_regs layout (the host's architecture, as aya-build derives it).
fn ebpf_clippy(ws: &Workspace, toolchain: &str) -> Command {
    let mut clippy = Command::new("rustup");
    clippy
        .current_dir(&ws.root)
        .args(["run", toolchain, "cargo", "clippy", "--package", "tracer-ebpf", "--bins", "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        // Its own directory: the flags differ from tracer/build.rs's build,
        // and sharing one would rebuild `core` each time either ran.
        .arg("--target-dir")
        .arg(ws.target.join("ebpf-clippy"))
        .args(["--", "-D", "warnings"])
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{}\"", std::env::consts::ARCH),
        );
    // The outer cargo's compiler would otherwise leak into the nightly's cargo.
    for key in ["RUSTC", "RUSTC_WORKSPACE_WRAPPER", "RUSTUP_TOOLCHAIN"] {
        clippy.env_remove(key);
    }
    clippy
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn ebpf_clippy_uses_the_pinned_nightly_and_the_bpf_target() {
        let ws = Workspace {
            root: PathBuf::from("/w"),
            target: PathBuf::from("/w/target"),
        };
        let line = cmd::describe(&ebpf_clippy(&ws, "the-pinned-nightly"));
        assert!(
            line.ends_with(
                "rustup run the-pinned-nightly cargo clippy --package tracer-ebpf --bins --release \
                 --target bpfel-unknown-none -Z build-std=core --target-dir /w/target/ebpf-clippy \
                 -- -D warnings"
            ),
            "{line}"
        );
        assert!(
            line.starts_with(&format!(
                "CARGO_ENCODED_RUSTFLAGS='--cfg=bpf_target_arch=\"{}\"' ",
                std::env::consts::ARCH
            )),
            "{line}"
        );
    }
}
