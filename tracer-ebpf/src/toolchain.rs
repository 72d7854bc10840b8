//! The pinned eBPF toolchain, read from `ebpf-toolchain.toml` at the workspace
//! root (which says why it is pinned). tracer/build.rs builds with it and
//! `cargo xtask setup` installs and checks it; both read it through here, so
//! the file is the only place that names it.

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

#[cfg(test)]
mod tests {
    use super::*;

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
