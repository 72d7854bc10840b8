//! pathcost's eBPF programs: an entry and an exit program per probe site, in
//! two flavours (kprobe/kretprobe and fentry/fexit), all sharing one per-CPU
//! call stack so nested calls are paired correctly and self time can be
//! separated from time spent in nested probed calls.

#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(not(target_arch = "bpf"))]
fn main() {
    // The programs only exist for the BPF target; tracer/build.rs builds them.
}

#[cfg(target_arch = "bpf")]
mod programs;

#[cfg(all(target_arch = "bpf", not(test)))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
// GPL-compatible, as bpf_probe_read_kernel and kprobes require.
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
