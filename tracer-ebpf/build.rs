//! Tells the programs which architecture's `pt_regs` to read
//! (`--cfg bpf_target_arch`), whether or not aya-build passed it.

fn main() -> anyhow::Result<()> {
    aya_build::emit_bpf_target_arch_cfg()
}
