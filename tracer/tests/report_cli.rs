//! `pathcost report` and `pathcost advise` as a user runs them: exit codes,
//! where each output lands, and one clear line for every bad results file.
//! Needs no privileges: both commands only read a file.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn pathcost(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pathcost"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("pathcost runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A fresh directory per test, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("pathcost-report-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn write(&self, name: &str, contents: &str) -> String {
        let p = self.path(name);
        std::fs::write(&p, contents).unwrap();
        p.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn report_prints_a_table_and_warnings_on_stderr() {
    let out = pathcost(&["report", fixture("sweep-6.12-tcg.json").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("pathcost report: kernel 6.12.117+deb12-amd64"), "{stdout}");
    assert!(stdout.contains("cost against N"), "{stdout}");
    let stderr = text(&out.stderr);
    assert!(stderr.lines().all(|l| l.starts_with("warning: ")), "{stderr}");
    assert!(stderr.contains("emulated"), "{stderr}");
}

#[test]
fn several_formats_in_one_run_each_to_its_file() {
    let dir = Scratch::new("several");
    let csv = dir.path("out/points.csv");
    let md = dir.path("out/report.md");
    let svg = dir.path("plots/cost.svg");
    let json = dir.path("report.json");
    let out = pathcost(&[
        "report",
        fixture("small.json").to_str().unwrap(),
        "--format",
        "csv",
        "--output",
        csv.to_str().unwrap(),
        "--export",
        &format!("md={}", md.display()),
        "--export",
        &format!("svg={}", svg.display()),
        "--export",
        &format!("json={}", json.display()),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "nothing goes to stdout when every output has a file");
    assert!(std::fs::read_to_string(&csv).unwrap().starts_with("mode,services,"));
    assert!(std::fs::read_to_string(&md).unwrap().starts_with("# pathcost report"));
    let svg = std::fs::read_to_string(&svg).unwrap();
    roxmltree::Document::parse(&svg).expect("the SVG is XML");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(json["results"]["points"].as_array().unwrap().len(), 8);
}

#[test]
fn two_outputs_to_one_file_are_refused() {
    let dir = Scratch::new("clash");
    let same = dir.path("same.txt");
    let out = pathcost(&[
        "report",
        fixture("small.json").to_str().unwrap(),
        "--output",
        same.to_str().unwrap(),
        "--export",
        &format!("md={}", same.display()),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("pathcost: table and md would both write"), "{}", text(&out.stderr));
    assert!(!same.exists());
}

#[test]
fn a_bad_export_flag_is_a_usage_error() {
    let out = pathcost(&["report", fixture("small.json").to_str().unwrap(), "--export", "png=plot.png"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown format 'png'"), "{}", text(&out.stderr));
}

#[test]
fn corrupt_truncated_and_foreign_files_give_one_clear_line() {
    let dir = Scratch::new("corrupt");
    let full = std::fs::read_to_string(fixture("small.json")).unwrap();
    let cases: Vec<(String, String)> = vec![
        (dir.path("missing.json").display().to_string(), "cannot be read: No such file".into()),
        (dir.write("empty.json", ""), "is empty".into()),
        (dir.write("truncated.json", &full[..full.len() * 2 / 3]), "ends early at line".into()),
        (dir.write("garbage.json", "schema_version: 1\n"), "is not valid JSON".into()),
        (
            dir.write("v3.json", &full.replacen("\"schema_version\": 1", "\"schema_version\": 3", 1)),
            "has schema_version 3; this pathcost reads versions 1 to 2".into(),
        ),
        (dir.write("noversion.json", "{\"points\": []}"), "a JSON object without schema_version".into()),
        (
            dir.write("schema.json", &full.replacen("\"services\": 10,", "\"services\": \"ten\",", 1)),
            "does not match results schema version 2: invalid type".into(),
        ),
    ];
    for (path, expected) in cases {
        for command in ["report", "advise"] {
            let out = pathcost(&[command, &path]);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{command} {path}: {stderr}");
            assert!(stderr.starts_with(&format!("pathcost: results file {path} ")), "{command}: {stderr}");
            assert!(stderr.contains(&expected), "{command}: expected {expected:?} in {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{command}: {stderr}");
            assert!(out.stdout.is_empty());
        }
    }
}

#[test]
fn empty_points_warn_and_advise_refuses() {
    let dir = Scratch::new("empty-points");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("small.json")).unwrap()).unwrap();
    v["points"] = serde_json::json!([]);
    let path = dir.write("nopoints.json", &v.to_string());
    let out = pathcost(&["report", &path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("warning: the results hold no points"), "{}", text(&out.stderr));
    let out = pathcost(&["advise", &path]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with(&format!("pathcost: results file {path} holds no measured points")));
}

#[test]
fn advise_names_a_mode_and_its_configuration() {
    let out = pathcost(&["advise", fixture("small.json").to_str().unwrap(), "--mode", "ipvs", "--services", "5000"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("advising for 5,000 service ports on the node, given on the command line: 2,500 services of the sweep"),
        "{stdout}"
    );
    assert!(stdout.contains("recommended: nftables"), "{stdout}");
    assert!(stdout.contains("kind: KubeProxyConfiguration\n  mode: nftables"), "{stdout}");
    assert!(stdout.contains("migration from ipvs to nftables"), "{stdout}");
}

/// On a node with kube-proxy, --live advises for it; anywhere else (the
/// build host) it must say what to pass instead, and never panic.
#[test]
fn advise_live_describes_the_node_or_says_what_to_pass_instead() {
    let out = pathcost(&["advise", fixture("small.json").to_str().unwrap(), "--live"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    if out.status.success() {
        assert!(stdout.contains("detected on this node") && stdout.contains("recommended: "), "{stdout}");
    } else {
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.starts_with("pathcost: ") && stderr.contains("--"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // Flags win over detection, so this works everywhere.
    let out = pathcost(&["advise", fixture("small.json").to_str().unwrap(), "--mode", "iptables-legacy", "--services", "300"]);
    assert!(text(&out.stdout).contains("migration: the node already runs iptables-legacy"), "{}", text(&out.stdout));
}
