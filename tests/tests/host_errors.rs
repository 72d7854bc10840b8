//! What a user sees when pathcost cannot work here: one clear message and
//! a non-zero exit, never a panic.

use std::process::Command;

use pathcost_tests::{is_root, pathcost_bin, skip};
use tracer::capabilities::KernelFeatures;

fn pathcost(args: &[&str]) -> (i32, String) {
    let out = Command::new(pathcost_bin()).args(args).output().expect("run pathcost");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "pathcost panicked: {stderr}");
    (out.status.code().unwrap_or(-1), stderr)
}

/// Errors only a kernel without kprobes, or without IPVS, can produce: the
/// build host. The VM has both, so its suite leaves this module out.
mod host_only {
    use super::*;

    #[test]
    fn trace_without_kprobes_or_fentry_fails_clearly() {
        let k = KernelFeatures::probe();
        if k.kprobes || !is_root() {
            return skip(
                "trace_without_kprobes_or_fentry_fails_clearly",
                "needs root on a kernel without kprobes (this project's build host)",
            );
        }
        let (code, stderr) = pathcost(&["trace", "--sites", "nf_hook_slow", "--duration", "1s"]);
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.starts_with("pathcost: could not attach to nf_hook_slow"), "{stderr}");
        assert!(stderr.contains("kernel has no kprobes"), "{stderr}");
        assert_eq!(stderr.matches("pathcost:").count(), 1, "one message: {stderr}");
    }

    #[test]
    fn absent_module_site_named_explicitly_is_an_error() {
        if !is_root() || std::path::Path::new("/sys/module/ip_vs").exists() {
            return skip("absent_module_site_named_explicitly_is_an_error", "needs root and ip_vs not loaded");
        }
        let (code, stderr) = pathcost(&["trace", "--sites", "ip_vs_in", "--duration", "1s"]);
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.contains("probe site ip_vs_in is not available"), "{stderr}");
        assert!(stderr.contains("module ip_vs is not loaded"), "{stderr}");
    }
}

#[test]
fn bad_flag_values_are_rejected_before_anything_runs() {
    for args in [
        &["trace", "--sites", "nope"][..],
        &["trace", "--duration", "ten"][..],
        &["trace", "--format", "xml"][..],
        &["selftest", "--packets", "0"][..],
    ] {
        let (code, stderr) = pathcost(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains("error:"), "{args:?}: {stderr}");
    }
}

#[test]
fn bad_sweep_values_are_rejected_with_a_clear_error() {
    for (args, expect) in [
        (&["sweep", "--services", "0"][..], "--services"),
        (&["sweep", "--services=-5"][..], "--services"),
        (&["sweep", "--services", "10,99999999"][..], "--services"),
        (&["sweep", "--modes", "iptables,ipvs"][..], "unknown mode 'iptables'"),
        (&["sweep", "--ipvs-scheduler", "fastest"][..], "fastest"),
        (&["sweep", "--endpoints", "0"][..], "--endpoints"),
        (&["sweep", "--protocols", "sctp"][..], "unknown protocol 'sctp'"),
        (&["sweep", "--connections", "100000"][..], "--connections"),
    ] {
        let (code, stderr) = pathcost(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
    }
}
