//! The toolchain pins agree everywhere they are used. ebpf-toolchain.toml
//! names the eBPF nightly, its LLVM major and bpf-linker once; the userspace
//! toolchain is rust-toolchain.toml. Each consumer must read those files,
//! and what it reads must be what the Rust reader reads, or a fresh machine
//! builds with something else than the developer's (a moving `nightly` on a
//! newer LLVM fails at link time with "Invalid record").

// They read the source tree and run git and rustc, which only the build
// host has: the VM suite skips `host_only::` (see xtask/src/vm/mod.rs).
mod host_only {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use pathcost_tests::pathcost_bin;
    use tracer_ebpf::toolchain::EbpfToolchain;

    fn workspace() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
    }

    fn read(relative: &str) -> String {
        let path = workspace().join(relative);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn pins() -> EbpfToolchain {
        EbpfToolchain::pinned().unwrap()
    }

    /// Runs a shell snippet in the workspace root and returns its trimmed stdout.
    fn sh(script: &str) -> String {
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(workspace())
            .output()
            .expect("run sh");
        assert!(out.status.success(), "`{script}` failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Any `nightly-YYYY-MM-DD` in a text: a pin written somewhere else.
    fn dated_nightlies(text: &str) -> Vec<&str> {
        text.match_indices("nightly-")
            .map(|(i, _)| &text[i..(i + "nightly-YYYY-MM-DD".len()).min(text.len())])
            .filter(|word| {
                let date = &word["nightly-".len()..];
                date.len() == 10 && date.chars().enumerate().all(|(i, c)| if i == 4 || i == 7 { c == '-' } else { c.is_ascii_digit() })
            })
            .collect()
    }

    #[test]
    fn the_pin_file_is_the_only_place_a_dated_nightly_is_written() {
        let listed = Command::new("git").args(["ls-files"]).current_dir(workspace()).output().expect("run git ls-files");
        assert!(listed.status.success(), "git ls-files failed in {}", workspace().display());
        let mut offenders = Vec::new();
        for file in String::from_utf8(listed.stdout).unwrap().lines() {
            if file == "ebpf-toolchain.toml" || file == "tests/tests/toolchain.rs" || file == "tracer-ebpf/src/toolchain.rs" {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(workspace().join(file)) else { continue };
            for pin in dated_nightlies(&text) {
                offenders.push(format!("{file}: {pin}"));
            }
        }
        assert!(offenders.is_empty(), "toolchains named outside ebpf-toolchain.toml:\n{}", offenders.join("\n"));
    }

    #[test]
    fn build_rs_hands_the_pinned_nightly_to_aya_build() {
        let build_rs = read("tracer/build.rs");
        assert!(build_rs.contains("EbpfToolchain::pinned()"), "tracer/build.rs does not read the pins");
        assert!(build_rs.contains("Toolchain::Custom(pins.rustc)"), "tracer/build.rs does not build with the pinned rustc");
        assert!(!build_rs.contains("Toolchain::default()") && !build_rs.contains("Toolchain::Nightly"));
        // What the built binary says built its programs.
        let out = Command::new(pathcost_bin()).arg("--version").output().expect("run pathcost --version");
        let version = String::from_utf8(out.stdout).unwrap();
        let p = pins();
        assert!(
            version.contains(&format!("built by {}, LLVM {})", p.rustc, p.llvm_major)),
            "pathcost --version does not name the pins: {version}"
        );
    }

    #[test]
    fn setup_installs_and_checks_the_pins() {
        let setup = read("xtask/src/setup.rs");
        assert!(setup.contains("EbpfToolchain::pinned()"), "xtask setup does not read the pins");
        // `rustup ... nightly` without a date is exactly the bug this file exists for.
        assert!(!setup.contains("\"nightly\""), "xtask setup names the moving `nightly`");
        assert!(setup.contains("\"--force\""), "a mismatched bpf-linker must be rebuilt");
    }

    #[test]
    fn the_containerfile_reads_the_same_pins() {
        let containerfile = read("deploy/Containerfile");
        assert!(containerfile.contains("COPY ebpf-toolchain.toml ./"));
        assert!(!containerfile.contains("nightly-x86_64"), "no toolchain renaming");
        // Run the Containerfile's own reader on the file and compare.
        let line = containerfile
            .lines()
            .find(|l| l.trim_start().starts_with("RUN pin() {"))
            .expect("a `RUN pin() { ... }` reader in the Containerfile");
        let definition = line.trim().trim_start_matches("RUN ").trim_end_matches('\\').trim();
        let p = pins();
        assert_eq!(sh(&format!("{definition}\npin rustc")), p.rustc);
        assert_eq!(sh(&format!("{definition}\npin llvm")), p.llvm_major.to_string());
        assert_eq!(sh(&format!("{definition}\npin bpf-linker")), p.bpf_linker);
        for used in ["\"llvm-${llvm}-dev\"", "--features \"llvm-${llvm}\"", "--version \"${linker}\"", "rustup toolchain install \"${nightly}\""] {
            assert!(containerfile.contains(used), "the Containerfile does not use {used}");
        }
        // The build stage's base image carries the userspace toolchain rust-toolchain.toml pins.
        let channel = userspace_channel();
        let minor = channel.rsplit_once('.').map_or(channel.as_str(), |(m, _)| m);
        assert!(containerfile.contains(&format!("FROM docker.io/library/rust:{minor}-")), "the build image is not rust:{minor}");
        assert!(containerfile.contains("rust-toolchain.toml"), "the image must build with rust-toolchain.toml");
    }

    #[test]
    fn the_workflow_checks_the_image_against_the_same_pin() {
        let workflow = read(".github/workflows/kind.yml");
        let line = workflow
            .lines()
            .find(|l| l.contains("pinned=$(") && l.contains("ebpf-toolchain.toml"))
            .expect("the kind workflow reads the pinned nightly from ebpf-toolchain.toml");
        let script = line.trim();
        assert_eq!(sh(&format!("{script}\necho \"$pinned\"")), pins().rustc);
        for path in ["ebpf-toolchain.toml", "rust-toolchain.toml"] {
            assert!(workflow.contains(&format!("      - {path}")), "the workflow's paths filter misses {path}");
        }
    }

    /// `channel = "1.95.0"` in rust-toolchain.toml.
    fn userspace_channel() -> String {
        let text = read("rust-toolchain.toml");
        text.lines()
            .find_map(|l| l.trim().strip_prefix("channel = "))
            .expect("rust-toolchain.toml has a channel")
            .trim_matches('"')
            .to_owned()
    }

    #[test]
    fn the_userspace_toolchain_is_pinned_to_a_release_the_workspace_accepts() {
        let channel = userspace_channel();
        assert_eq!(channel.split('.').count(), 3, "pin an exact release, not `{channel}`");
        assert!(channel.chars().all(|c| c.is_ascii_digit() || c == '.'), "a numbered release, not `{channel}`");
        let cargo = read("Cargo.toml");
        let msrv = cargo
            .lines()
            .find_map(|l| l.trim().strip_prefix("rust-version = "))
            .unwrap()
            .trim_matches('"')
            .to_owned();
        assert!(channel.starts_with(&msrv), "rust-toolchain.toml {channel} vs rust-version {msrv}");
        // The compiler this test was built with is the pinned one.
        let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .arg("--version")
            .current_dir(workspace())
            .output()
            .unwrap();
        let rustc = String::from_utf8(rustc.stdout).unwrap();
        assert!(rustc.starts_with(&format!("rustc {channel} ")), "cargo runs {rustc} in the workspace, not {channel}");
    }
}
