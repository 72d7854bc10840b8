//! The pinned eBPF toolchain, read from `ebpf-toolchain.toml` at the workspace
//! root (which says why it is pinned). tracer/build.rs builds with it and
//! `cargo xtask setup` installs and checks it; both read it through here, so
//! the file is the only place that names it.
//!
//! It also holds the eBPF build to the workspace's Cargo.lock: aya-build runs
//! its own `cargo build` for the bpf target and passes no `--locked`, so
//! [`keep_lockfile`] checks the lock afterwards instead.

use std::{format, path::Path, string::String};

/// The file, embedded at compile time: cargo rebuilds whoever reads it when it
/// changes.
const PIN_FILE: &str = include_str!("../../ebpf-toolchain.toml");

/// What `ebpf-toolchain.toml` pins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EbpfToolchain {
    /// The dated nightly passed to `rustup run` (no leading `+`).
    pub rustc: &'static str,
    /// The LLVM major both that rustc and bpf-linker must be built on.
    pub llvm_major: u32,
    /// The bpf-linker release, built with its `llvm-<llvm_major>` feature.
    pub bpf_linker: &'static str,
}

impl EbpfToolchain {
    /// The pins of this checkout.
    pub fn pinned() -> Result<Self, &'static str> {
        Self::parse(PIN_FILE)
    }

    /// Reads `key = "value"` lines; `#` starts a comment line.
    pub fn parse(text: &'static str) -> Result<Self, &'static str> {
        let value = |key: &str| {
            text.lines()
                .filter(|line| !line.trim_start().starts_with('#'))
                .filter_map(|line| line.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().trim_matches('"'))
                .filter(|v| !v.is_empty())
        };
        let rustc = value("rustc").ok_or("ebpf-toolchain.toml has no `rustc = \"...\"` line")?;
        let llvm_major = value("llvm")
            .and_then(|v| v.parse().ok())
            .ok_or("ebpf-toolchain.toml has no numeric `llvm = \"...\"` line")?;
        let bpf_linker =
            value("bpf-linker").ok_or("ebpf-toolchain.toml has no `bpf-linker = \"...\"` line")?;
        Ok(Self {
            rustc,
            llvm_major,
            bpf_linker,
        })
    }
}

/// Runs `build` and fails if it changed `lockfile`: the effect of `cargo
/// build --locked` for a build that cannot be given the flag (aya-build's
/// inner `cargo build` of the eBPF programs). A changed lock is put back as
/// it was, so the next build starts from the reviewed one.
pub fn keep_lockfile<T, E: core::fmt::Display>(
    lockfile: &Path,
    build: impl FnOnce() -> Result<T, E>,
) -> Result<T, String> {
    let read = |when: &str| {
        std::fs::read(lockfile).map_err(|e| format!("cannot read {} {when} the eBPF build: {e}", lockfile.display()))
    };
    let before = read("before")?;
    let built = build().map_err(|e| format!("{e}"));
    let after = read("after")?;
    if after != before {
        std::fs::write(lockfile, &before).map_err(|e| format!("cannot restore {}: {e}", lockfile.display()))?;
        return Err(format!(
            "the eBPF build changed {} (its inner cargo resolved differently from the lock); the lock is restored: \
             run `cargo update -p <crate>` for what tracer-ebpf needs and commit the lock",
            lockfile.display()
        ));
    }
    built
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_that_changes_the_lock_fails_and_the_lock_is_restored() {
        let dir = std::env::temp_dir().join(format!("pathcost-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lock = dir.join("Cargo.lock");
        std::fs::write(&lock, "version = 4\n").unwrap();
        let same: Result<u32, String> = keep_lockfile(&lock, || Ok::<_, String>(7));
        assert_eq!(same, Ok(7));
        let changed = keep_lockfile(&lock, || {
            std::fs::write(&lock, "version = 4\n[[package]]\nname = \"newer\"\n").map_err(|e| format!("{e}"))
        });
        assert!(changed.unwrap_err().contains("changed"), "a changed lock is an error");
        assert_eq!(std::fs::read_to_string(&lock).unwrap(), "version = 4\n", "and is put back");
        let failed: Result<(), String> = keep_lockfile(&lock, || Err("linker"));
        assert_eq!(failed, Err("linker".into()), "the build's own error comes through");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_checked_in_pins_parse() {
        let pins = EbpfToolchain::pinned().unwrap();
        assert!(pins.rustc.starts_with("nightly-20"), "{}", pins.rustc);
        assert!(pins.llvm_major >= 20);
        assert_eq!(pins.bpf_linker.split('.').count(), 3);
    }

    #[test]
    fn comments_and_missing_keys() {
        let pins =
            EbpfToolchain::parse("# rustc = \"x\"\nrustc = \"nightly-2026-01-01\"\nllvm = \"21\"\nbpf-linker = \"0.12.1\"\n")
                .unwrap();
        assert_eq!(pins.rustc, "nightly-2026-01-01");
        assert_eq!(pins.llvm_major, 21);
        assert!(EbpfToolchain::parse("rustc = \"n\"\nllvm = \"x\"\nbpf-linker = \"1\"").is_err());
        assert!(EbpfToolchain::parse("llvm = \"22\"\nbpf-linker = \"1\"").is_err());
    }
}
