//! Builds the eBPF object (tracer-ebpf's programs, for the bpfel target) so
//! the loader can embed it with `include_bytes_aligned!`.

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let metadata_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("tracer has no parent directory")?
        .join("tracer-ebpf");
    let root_dir = metadata_dir
        .to_str()
        .context("workspace path is not UTF-8")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "tracer-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
