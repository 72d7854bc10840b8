//! Shared helpers for pathcost's integration tests: finding the binary, and
//! deciding (by probing the kernel, never by version) whether a test can run
//! here or must skip with a printed reason.

use std::path::PathBuf;

use tracer::capabilities::KernelFeatures;

/// True inside the test VM (`cargo xtask test` sets it in the VM's init).
pub fn in_vm() -> bool {
    std::env::var_os("PATHCOST_IN_VM").is_some()
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Why a kprobe-based test cannot run here, or `None` when it can.
pub fn kprobe_skip_reason() -> Option<String> {
    if !is_root() {
        return Some("needs root".into());
    }
    let k = KernelFeatures::probe();
    if !k.kprobes {
        return Some(format!("kernel {} has no kprobes (runs in the test VM: cargo xtask test)", k.release));
    }
    if !k.btf {
        return Some(format!("kernel {} has no BTF", k.release));
    }
    None
}

/// Prints why a test skips, in a form `cargo test -- --nocapture` shows.
pub fn skip(test: &str, why: &str) {
    eprintln!("SKIP {test}: {why}");
}

/// The `pathcost` binary under test: `$PATHCOST_BIN`, `/bin/pathcost` in
/// the VM, else the one cargo built next to this test's target directory.
pub fn pathcost_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PATHCOST_BIN") {
        return p.into();
    }
    if in_vm() {
        return "/bin/pathcost".into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/pathcost
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("pathcost"))
        .expect("test executable lives in target/<profile>/deps");
    assert!(bin.exists(), "{} not built: run `cargo build -p tracer` first", bin.display());
    bin
}
