//! `cargo xtask setup`: install what building pathcost and booting the test VM need.
//!
//! CI starts from a clean machine, so the project installs everything itself; each
//! step first checks cheaply whether its piece is present, so a warm run takes well
//! under a second.

use std::process::Command;

use anyhow::{bail, Context as _, Result};

use tracer_ebpf::toolchain::EbpfToolchain;

use crate::cmd;

/// Debian packages: LLVM (`llvm-N-dev` and friends, N from ebpf-toolchain.toml) for
/// bpf-linker, qemu + busybox for the VM, the netfilter/IPVS user-space tools that
/// get copied into the VM's initramfs, bpftrace, the independent measurement the
/// bracket backend is checked against on the host, and shellcheck for the kind
/// workflow's scripts.
fn apt_packages_wanted(pins: &EbpfToolchain) -> Vec<String> {
    let llvm = pins.llvm_major;
    let mut packages = vec![
        format!("llvm-{llvm}-dev"),
        format!("libclang-{llvm}-dev"),
        format!("libpolly-{llvm}-dev"),
    ];
    packages.extend(
        [
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
        ]
        .map(String::from),
    );
    packages
}

/// The toolchain pins of this checkout (ebpf-toolchain.toml).
pub fn pins() -> Result<EbpfToolchain> {
    EbpfToolchain::pinned().map_err(anyhow::Error::msg)
}

pub fn run() -> Result<()> {
    let pins = pins()?;
    apt_packages(&pins)?;
    userspace_clippy()?;
    ebpf_toolchain(&pins)?;
    bpf_linker(&pins)?;
    Ok(())
}

/// clippy on the userspace toolchain, the one pinned in rust-toolchain.toml
/// (xtask runs on it, so `rustup` here resolves to it). `.ci/run`'s
/// `rustup toolchain install` installs the components that file lists with
/// a toolchain it installs; a machine whose image already has the pinned
/// release with the minimal profile would still lack clippy.
fn userspace_clippy() -> Result<()> {
    let installed = cmd::output(Command::new("rustup").args(["component", "list", "--installed"]))
        .context("rustup is needed to add clippy to the userspace toolchain")?;
    if installed.status.success() && has_component(&String::from_utf8_lossy(&installed.stdout), "clippy") {
        println!("setup: clippy for the userspace toolchain ... present");
        return Ok(());
    }
    println!("setup: clippy for the userspace toolchain ... installing");
    cmd::run(Command::new("rustup").args(["component", "add", "clippy"]))
}

fn apt_packages(pins: &EbpfToolchain) -> Result<()> {
    let missing = missing_apt_packages(&apt_packages_wanted(pins))?;
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
fn missing_apt_packages(wanted: &[String]) -> Result<Vec<String>> {
    if which("dpkg-query").is_none() {
        // Not a dpkg system: everything counts as missing and the caller explains.
        return Ok(wanted.to_vec());
    }
    let output = cmd::output(
        Command::new("dpkg-query")
            .args(["-W", "-f=${Package} ${Status}\n"])
            .args(wanted),
    )?;
    let listing = String::from_utf8_lossy(&output.stdout);
    Ok(wanted
        .iter()
        .filter(|pkg| !is_installed(&listing, pkg))
        .cloned()
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

/// Components of the pinned nightly: rust-src, from which aya-build compiles
/// `core` for the BPF target, and clippy, which `cargo xtask lint` runs on the
/// eBPF programs.
const EBPF_COMPONENTS: [&str; 2] = ["rust-src", "clippy"];

/// The pinned nightly with its components, then a check that its LLVM is the
/// pinned one.
fn ebpf_toolchain(pins: &EbpfToolchain) -> Result<()> {
    let toolchain = pins.rustc;
    let installed = cmd::output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        toolchain,
        "--installed",
    ]))
    .context("rustup is needed for the nightly toolchain that builds the eBPF programs")?;
    let listing = String::from_utf8_lossy(&installed.stdout);
    let missing: Vec<&str> = EBPF_COMPONENTS
        .into_iter()
        .filter(|c| !installed.status.success() || !has_component(&listing, c))
        .collect();
    let components = EBPF_COMPONENTS.join(", ");
    if missing.is_empty() {
        println!("setup: eBPF toolchain {toolchain} with {components} ... present");
    } else {
        println!(
            "setup: eBPF toolchain {toolchain} with {components} ... installing {}",
            missing.join(", ")
        );
        // On a toolchain that is already there, this only adds the components.
        let mut install = Command::new("rustup");
        install.args(["toolchain", "install", toolchain, "--profile", "minimal"]);
        for component in EBPF_COMPONENTS {
            install.args(["--component", component]);
        }
        cmd::run(&mut install)?;
    }
    let version = cmd::stdout(Command::new("rustup").args(["run", toolchain, "rustc", "-vV"]))?;
    match rustc_llvm_major(&version) {
        Some(major) if major == pins.llvm_major => Ok(()),
        found => bail!(
            "the eBPF toolchain {toolchain} is built on LLVM {}, but ebpf-toolchain.toml pins LLVM {llvm} \
             (bpf-linker's, from llvm-{llvm}-dev); set `rustc` there to a dated nightly whose \
             `rustup run <nightly> rustc -vV` says `LLVM version: {llvm}.x`",
            found.map_or("(unknown)".to_owned(), |m| m.to_string()),
            llvm = pins.llvm_major,
        ),
    }
}

/// `rustup component list --installed` names components with the host's
/// target triple, or without one for target-independent ones (`rust-src`,
/// `clippy-x86_64-unknown-linux-gnu`).
fn has_component(listing: &str, component: &str) -> bool {
    listing.lines().map(str::trim).any(|line| {
        line == component
            || line
                .strip_prefix(component)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|triple| triple.starts_with(std::env::consts::ARCH))
    })
}

/// `LLVM version: 22.1.4` in `rustc -vV` output.
fn rustc_llvm_major(version: &str) -> Option<u32> {
    version
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version:"))
        .and_then(|v| v.trim().split('.').next()?.parse().ok())
}

/// bpf-linker at the pinned release and on the pinned LLVM; anything else is
/// rebuilt (an LLVM mismatch would otherwise surface as "Invalid record" at link
/// time, far from its cause).
fn bpf_linker(pins: &EbpfToolchain) -> Result<()> {
    let found = installed_bpf_linker();
    let wanted = (pins.bpf_linker.to_owned(), Some(pins.llvm_major));
    if found.as_ref() == Some(&wanted) {
        println!(
            "setup: bpf-linker {} on LLVM {} ... present",
            pins.bpf_linker, pins.llvm_major
        );
        return Ok(());
    }
    let was = found.map_or("not installed".to_owned(), |(version, llvm)| {
        format!(
            "found {version} on LLVM {}",
            llvm.map_or("(unknown)".to_owned(), |m| m.to_string())
        )
    });
    println!(
        "setup: bpf-linker ... installing {} on LLVM {} ({was})",
        pins.bpf_linker, pins.llvm_major
    );
    let install = |locked: bool| {
        let mut cargo = Command::new(crate::cargo());
        cargo
            .env("LLVM_PREFIX", format!("/usr/lib/llvm-{}", pins.llvm_major))
            .args(["install", "bpf-linker", "--force", "--version", pins.bpf_linker]);
        if locked {
            cargo.arg("--locked");
        }
        cargo.args([
            "--no-default-features",
            "--features",
            &format!("llvm-{}", pins.llvm_major),
        ]);
        cmd::run(&mut cargo)
    };
    // The lock file pins what upstream tested; if one of its pins no longer resolves
    // (a yanked crate), an unlocked build is still better than none.
    install(true).or_else(|err| {
        eprintln!("setup: locked install failed ({err:#}); retrying without --locked");
        install(false)
    })?;
    match installed_bpf_linker() {
        Some((_, Some(llvm))) if llvm == pins.llvm_major => Ok(()),
        _ => bail!(
            "bpf-linker was rebuilt but does not run on LLVM {llvm}; check that \
             /usr/lib/llvm-{llvm} holds llvm-{llvm}-dev and that no other bpf-linker comes first on PATH",
            llvm = pins.llvm_major
        ),
    }
}

/// The bpf-linker on PATH: its release (`bpf-linker 0.13.0`) and the LLVM major
/// it runs on.
fn installed_bpf_linker() -> Option<(String, Option<u32>)> {
    let path = which("bpf-linker")?;
    let out = cmd::output(Command::new(&path).arg("--version")).ok()?;
    let version = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)?
        .to_owned();
    Some((version, bpf_linker_llvm_major(&path)))
}

/// The LLVM a bpf-linker binary runs on: the `libLLVM.so.N` it loads (how a
/// build against Debian's llvm-N-dev links), else the `llvm-N` feature cargo
/// recorded when it installed it (a static build).
fn bpf_linker_llvm_major(path: &std::path::Path) -> Option<u32> {
    let from_ldd = cmd::stdout(Command::new("ldd").arg(path))
        .ok()
        .and_then(|listing| ldd_llvm_major(&listing));
    from_ldd.or_else(|| {
        let home = std::env::var_os("CARGO_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| Some(std::path::PathBuf::from(std::env::var_os("HOME")?).join(".cargo")))?;
        let record = std::fs::read_to_string(home.join(".crates2.json")).ok()?;
        installed_llvm_feature(&record)
    })
}

/// `libLLVM.so.22.1 => ...` or `libLLVM-22.so => ...` in `ldd` output.
fn ldd_llvm_major(listing: &str) -> Option<u32> {
    listing.lines().find_map(|line| {
        let name = line.split_whitespace().next()?;
        let rest = name
            .strip_prefix("libLLVM.so.")
            .or_else(|| name.strip_prefix("libLLVM-"))?;
        rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    })
}

/// The `llvm-N` feature of bpf-linker in cargo's install record.
fn installed_llvm_feature(crates2_json: &str) -> Option<u32> {
    let record: serde_json::Value = serde_json::from_str(crates2_json).ok()?;
    let (_, install) = record
        .get("installs")?
        .as_object()?
        .iter()
        .find(|(key, _)| key.starts_with("bpf-linker "))?;
    install
        .get("features")?
        .as_array()?
        .iter()
        .find_map(|f| f.as_str()?.strip_prefix("llvm-")?.parse().ok())
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
    fn installed_components() {
        let arch = std::env::consts::ARCH;
        let listing = format!("cargo-{arch}-unknown-linux-gnu\nclippy-{arch}-unknown-linux-gnu\nrust-src\n");
        let listing = listing.as_str();
        assert!(has_component(listing, "rust-src"));
        assert!(has_component(listing, "clippy"));
        assert!(!has_component(listing, "rustfmt"));
        // rust-src is not rust-std-<target>, nor the other way round.
        assert!(!has_component(&format!("rust-std-{arch}-unknown-linux-gnu\n"), "rust"));
        assert!(!has_component("rust-src\n", "rust"));
    }

    #[test]
    fn llvm_majors() {
        let rustc = "rustc 1.101.0-nightly (0d1e2c3b4 2026-10-29)\nbinary: rustc\nLLVM version: 23.1.4\n";
        assert_eq!(rustc_llvm_major(rustc), Some(23));
        assert_eq!(rustc_llvm_major("rustc 1.95.0\n"), None);
        let ldd = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibLLVM.so.22.1 => /usr/lib/llvm-22/lib/libLLVM.so.22.1 (0x00007fa4)\n";
        assert_eq!(ldd_llvm_major(ldd), Some(22));
        assert_eq!(ldd_llvm_major("\tlibLLVM-21.so => /x (0x1)\n"), Some(21));
        assert_eq!(ldd_llvm_major("\tlibc.so.6 => /lib/libc.so.6 (0x1)\n"), None);
        let crates2 = r#"{"installs":{"bpf-linker 0.13.0 (registry+x)":{"features":["llvm-22"]}}}"#;
        assert_eq!(installed_llvm_feature(crates2), Some(22));
    }

    #[test]
    fn apt_packages_follow_the_llvm_pin() {
        let pins = pins().unwrap();
        let wanted = apt_packages_wanted(&pins);
        assert!(wanted.contains(&format!("llvm-{}-dev", pins.llvm_major)));
    }

    #[test]
    fn os_release() {
        assert!(is_debian_like("ID=debian\nVERSION_ID=\"12\"\n"));
        assert!(is_debian_like("ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n"));
        assert!(!is_debian_like("ID=fedora\n"));
    }
}
