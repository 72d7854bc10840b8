//! `cargo xtask build`: build `pathcost` and the test binaries that run in the VM.
//!
//! Paths come from cargo's JSON messages rather than guessed from the target
//! directory, so test binaries (whose names carry a hash) are found exactly.

use std::io::BufReader;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

use crate::{cmd, setup, Workspace};

#[derive(clap::Args)]
pub struct Options {
    /// Use the release profile (the VM always gets release builds: TCG is slow).
    #[arg(long)]
    release: bool,
}

/// A test executable and the name of the cargo target it was built from.
#[derive(Debug, Clone)]
pub struct TestBinary {
    pub name: String,
    pub path: PathBuf,
}

pub fn run(ws: &Workspace, options: &Options) -> Result<()> {
    setup::run()?;
    let pathcost = pathcost(ws, options.release)?;
    let tests = vm_tests(ws, options.release)?;
    println!("pathcost: {}", pathcost.display());
    for test in &tests {
        println!("test {}: {}", test.name, test.path.display());
    }
    Ok(())
}

/// Builds the `pathcost` binary; its build script compiles the eBPF object with
/// the nightly pinned in ebpf-toolchain.toml and bpf-linker (found through PATH).
pub fn pathcost(ws: &Workspace, release: bool) -> Result<PathBuf> {
    let artifacts = cargo_artifacts(ws, "build", &["-p", "tracer"], release)?;
    artifacts
        .into_iter()
        .find(|a| a.target.name == "pathcost" && a.target.kind.iter().any(|k| k == "bin"))
        .and_then(|a| a.executable)
        .context("cargo built no `pathcost` executable")
}

/// Builds (without running) the test binaries of the `pathcost-tests` package.
pub fn vm_tests(ws: &Workspace, release: bool) -> Result<Vec<TestBinary>> {
    let artifacts = cargo_artifacts(ws, "test", &["-p", "pathcost-tests", "--no-run"], release)?;
    let mut tests: Vec<TestBinary> = Vec::new();
    for artifact in artifacts {
        let (true, Some(path)) = (artifact.profile.test, artifact.executable) else {
            continue;
        };
        // The library's unit tests and an integration test could share a name.
        let mut name = artifact.target.name;
        if tests.iter().any(|t| t.name == name) {
            name = format!("{name}-{}", artifact.target.kind.join("-"));
        }
        tests.push(TestBinary { name, path });
    }
    // By name: cargo reports artifacts in the order its jobs finish, which
    // varies between builds, and the VM suite runs its binaries in this
    // order. A fixed order makes one CI run repeat the last.
    tests.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(tests)
}

#[derive(Deserialize)]
struct Message {
    reason: String,
    #[serde(default)]
    target: Option<Target>,
    #[serde(default)]
    profile: Option<Profile>,
    #[serde(default)]
    executable: Option<PathBuf>,
}

#[derive(Deserialize)]
struct Target {
    name: String,
    kind: Vec<String>,
}

#[derive(Deserialize)]
struct Profile {
    test: bool,
}

struct Artifact {
    target: Target,
    profile: Profile,
    executable: Option<PathBuf>,
}

/// Runs a cargo build command and collects its `compiler-artifact` messages; the
/// human-readable diagnostics still go to our stderr as the build runs.
fn cargo_artifacts(
    ws: &Workspace,
    subcommand: &str,
    args: &[&str],
    release: bool,
) -> Result<Vec<Artifact>> {
    let mut cargo = Command::new(crate::cargo());
    cargo
        .current_dir(&ws.root)
        .arg(subcommand)
        .args(args)
        .arg("--message-format=json-render-diagnostics");
    if release {
        cargo.arg("--release");
    }
    let mut child = cargo
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to start `{}`", cmd::describe(&cargo)))?;
    let stdout = child
        .stdout
        .take()
        .context("cargo's stdout was not captured")?;
    let artifacts = parse_messages(BufReader::new(stdout))?;
    let status = child
        .wait()
        .with_context(|| format!("failed to wait for `{}`", cmd::describe(&cargo)))?;
    if !status.success() {
        bail!("`{}` failed: {status}", cmd::describe(&cargo));
    }
    Ok(artifacts)
}

fn parse_messages(reader: impl std::io::BufRead) -> Result<Vec<Artifact>> {
    let mut artifacts = Vec::new();
    for line in reader.lines() {
        let line = line.context("failed to read cargo's output")?;
        // Anything that is not a message we understand (e.g. a future message kind
        // with another shape) is not ours to judge.
        let Ok(message) = serde_json::from_str::<Message>(&line) else {
            continue;
        };
        if message.reason != "compiler-artifact" {
            continue;
        }
        if let (Some(target), Some(profile)) = (message.target, message.profile) {
            artifacts.push(Artifact {
                target,
                profile,
                executable: message.executable,
            });
        }
    }
    Ok(artifacts)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn finds_test_executables() {
        let messages = r#"{"reason":"compiler-artifact","target":{"name":"pathcost_tests","kind":["lib"]},"profile":{"test":false},"executable":null}
{"reason":"compiler-artifact","target":{"name":"pathcost_tests","kind":["lib"]},"profile":{"test":true},"executable":"/t/release/deps/pathcost_tests-1234"}
{"reason":"compiler-artifact","target":{"name":"vm_probes","kind":["test"]},"profile":{"test":true},"executable":"/t/release/deps/vm_probes-abcd"}
{"reason":"build-finished","success":true}
"#;
        let artifacts = parse_messages(messages.as_bytes()).unwrap();
        let tests: Vec<_> = artifacts
            .iter()
            .filter(|a| a.profile.test)
            .filter_map(|a| Some((a.target.name.as_str(), a.executable.as_deref()?)))
            .collect();
        assert_eq!(
            tests,
            [
                (
                    "pathcost_tests",
                    Path::new("/t/release/deps/pathcost_tests-1234")
                ),
                ("vm_probes", Path::new("/t/release/deps/vm_probes-abcd")),
            ]
        );
    }
}
