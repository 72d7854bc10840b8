//! `cargo xtask setup`: install what building pathcost and booting the test VM need.
//!
//! CI starts from a clean machine, so the project installs everything itself; each
//! step first checks cheaply whether its piece is present, so a warm run takes well
//! under a second.

use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::cmd;

/// Debian packages: LLVM 22 for bpf-linker, qemu + busybox for the VM, the
/// netfilter/IPVS user-space tools that get copied into the VM's initramfs,
/// bpftrace, the independent measurement the bracket backend is checked
/// against on the host, and shellcheck for the kind workflow's scripts.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libclang-22-dev",
    "libpolly-22-dev",
    "qemu-system-x86",
    "busybox-static",
    "iptables",
    "nftables",
    "ipvsadm",
    "ipset",
    "cpio",
    "xz-utils",
    "iproute2",
    "kmod",
    "conntrack",
    "bpftrace",
    "shellcheck",
];

/// bpf-linker's default feature wants LLVM 23, which Debian does not have; 0.13 with
/// `llvm-22` builds against llvm-22-dev.
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

pub fn run() -> Result<()> {
    apt_packages()?;
    nightly_rust_src()?;
    bpf_linker()?;
    Ok(())
}

fn apt_packages() -> Result<()> {
    let missing = missing_apt_packages()?;
    if missing.is_empty() {
        println!("setup: apt packages ... present");
        return Ok(());
    }
    match cannot_install_here() {
        Some(Obstacle::NotRoot) => bail!(
            "missing Debian packages: {list}; this is not running as root, so run\n    \
             sudo apt-get update\n    \
             sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {list}\n\
             and then `cargo xtask setup` again",
            list = missing.join(" ")
        ),
        Some(Obstacle::NotDebian) => bail!(
            "missing Debian packages: {}; this is not Debian or Ubuntu (per /etc/os-release), \
             so install their equivalents with your package manager and then run \
             `cargo xtask setup` again",
            missing.join(" ")
        ),
        None => {}
    }
    println!("setup: apt packages ... installing {}", missing.join(" "));
    cmd::run(Command::new("apt-get").arg("update"))?;
    cmd::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing),
    )
}

/// All packages in one `dpkg-query` call; a package it does not know makes it exit
/// non-zero, but it still reports the ones it knows.
fn missing_apt_packages() -> Result<Vec<&'static str>> {
    if which("dpkg-query").is_none() {
        // Not a dpkg system: everything counts as missing and the caller explains.
        return Ok(APT_PACKAGES.to_vec());
    }
    let output = cmd::output(
        Command::new("dpkg-query")
            .args(["-W", "-f=${Package} ${Status}\n"])
            .args(APT_PACKAGES),
    )?;
    let listing = String::from_utf8_lossy(&output.stdout);
    Ok(APT_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| !is_installed(&listing, pkg))
        .collect())
}

fn is_installed(listing: &str, pkg: &str) -> bool {
    listing.lines().any(|line| {
        // Multi-arch packages may print as `name:amd64`.
        line.split_once(' ').is_some_and(|(name, status)| {
            name.split(':').next() == Some(pkg) && status.trim() == "install ok installed"
        })
    })
}

enum Obstacle {
    NotRoot,
    NotDebian,
}

/// Why apt cannot be driven from here, if it cannot.
fn cannot_install_here() -> Option<Obstacle> {
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    if !is_debian_like(&os_release) {
        return Some(Obstacle::NotDebian);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some(Obstacle::NotRoot);
    }
    None
}

fn is_debian_like(os_release: &str) -> bool {
    os_release.lines().any(|line| {
        let Some((key, value)) = line.split_once('=') else {
            return false;
        };
        (key == "ID" || key == "ID_LIKE")
            && value
                .trim_matches('"')
                .split_whitespace()
                .any(|id| id == "debian" || id == "ubuntu")
    })
}

fn nightly_rust_src() -> Result<()> {
    let installed = cmd::output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .context("rustup is needed for the nightly toolchain that builds the eBPF crate")?;
    let has_src = installed.status.success()
        && String::from_utf8_lossy(&installed.stdout)
            .lines()
            .any(|line| line.trim() == "rust-src");
    if has_src {
        println!("setup: nightly rust-src ... present");
        return Ok(());
    }
    println!("setup: nightly rust-src ... installing");
    cmd::run(Command::new("rustup").args([
        "toolchain",
        "install",
        "nightly",
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))
}

fn bpf_linker() -> Result<()> {
    let version = cmd::output(Command::new("bpf-linker").arg("--version")).ok();
    let current = version
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned());
    if current.as_deref().is_some_and(same_minor_version) {
        println!("setup: bpf-linker ... present");
        return Ok(());
    }
    println!(
        "setup: bpf-linker ... installing {BPF_LINKER_VERSION}{}",
        current.map_or(String::new(), |c| format!(" (found {})", c.trim()))
    );
    let install = |locked: bool| {
        let mut cargo = Command::new(crate::cargo());
        cargo.env("LLVM_PREFIX", LLVM_PREFIX).args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
        ]);
        if locked {
            cargo.arg("--locked");
        }
        cargo.args(["--no-default-features", "--features", "llvm-22"]);
        cmd::run(&mut cargo)
    };
    // The lock file pins what upstream tested; if one of its pins no longer resolves
    // (a yanked crate), an unlocked build is still better than none.
    install(true).or_else(|err| {
        eprintln!("setup: locked install failed ({err:#}); retrying without --locked");
        install(false)
    })
}

/// Any 0.13.x will do: `bpf-linker --version` prints `bpf-linker 0.13.0`.
fn same_minor_version(version_line: &str) -> bool {
    let wanted = BPF_LINKER_VERSION
        .rsplit_once('.')
        .map_or("", |(minor, _)| minor);
    version_line.split_whitespace().any(|word| {
        word.strip_prefix(wanted)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    })
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_listing() {
        let listing = "cpio install ok installed\nkmod deinstall ok config-files\nlibclang-22-dev:amd64 install ok installed\n";
        assert!(is_installed(listing, "cpio"));
        assert!(!is_installed(listing, "kmod"));
        assert!(is_installed(listing, "libclang-22-dev"));
        assert!(!is_installed(listing, "conntrack"));
    }

    #[test]
    fn bpf_linker_version() {
        assert!(same_minor_version("bpf-linker 0.13.0\n"));
        assert!(same_minor_version("bpf-linker 0.13.2"));
        assert!(!same_minor_version("bpf-linker 0.130.0"));
        assert!(!same_minor_version("bpf-linker 0.12.1"));
    }

    #[test]
    fn os_release() {
        assert!(is_debian_like("ID=debian\nVERSION_ID=\"12\"\n"));
        assert!(is_debian_like("ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n"));
        assert!(!is_debian_like("ID=fedora\n"));
    }
}
