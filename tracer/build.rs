//! Builds the eBPF object (tracer-ebpf's programs, for the bpfel target) so
//! the loader can embed it with `include_bytes_aligned!`, with the toolchain
//! pinned in ebpf-toolchain.toml (never whatever `nightly` is on the machine).

use anyhow::Context as _;
use tracer_ebpf::toolchain::{keep_lockfile, EbpfToolchain};

fn main() -> anyhow::Result<()> {
    let pins = EbpfToolchain::pinned().map_err(anyhow::Error::msg)?;
    // `pathcost --version` names it, so a binary says what built its programs.
    println!("cargo:rustc-env=PATHCOST_EBPF_RUSTC={}", pins.rustc);
    println!("cargo:rustc-env=PATHCOST_EBPF_LLVM={}", pins.llvm_major);
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("tracer has no parent directory")?;
    let metadata_dir = workspace.join("tracer-ebpf");
    let root_dir = metadata_dir
        .to_str()
        .context("workspace path is not UTF-8")?;
    // aya-build's inner `cargo build` takes no --locked: hold it to the
    // lock the outer (--locked) build was checked against.
    keep_lockfile(&workspace.join("Cargo.lock"), || {
        aya_build::build_ebpf(
            [aya_build::Package {
                name: "tracer-ebpf",
                root_dir,
                ..Default::default()
            }],
            aya_build::Toolchain::Custom(pins.rustc),
        )
    })
    .map_err(anyhow::Error::msg)
}
