//! What `pathcost serve` says about the node it runs on: kube-proxy's
//! mode, the iptables backend and the service and endpoint counts, from
//! [`crate::detection`], re-run every `--refresh` on a thread of its own
//! (detection runs the node's tools and waits for them).

use std::{
    sync::{mpsc, Arc, PoisonError, RwLock},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::detection::{
    self, Backends, CollectOptions, CountSource, Detection, IptablesFlavour, KubeProxyMode, NodeFindings, SourcedCount,
};

/// One state kube-proxy left, with its counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceCount {
    /// The mode whose state this is.
    pub mode: &'static str,
    /// Where it was counted: `iptables-legacy`, `iptables-nft`, `ipvs`,
    /// `nftables ip`, `nftables ip6`.
    pub source: String,
    /// The running mode's state (the others are leftovers).
    pub active: bool,
    /// Service ports: KUBE-SVC/SVL chains, IPVS virtual servers, or
    /// nftables `service-*` chains.
    pub services: u64,
    /// KUBE-SEP chains, IPVS real servers or nftables `endpoint-*` chains.
    pub endpoints: Option<u64>,
    /// `netlink` or `tool` (detect's `count_sources`).
    pub counted_by: &'static str,
}

/// Labels and counts from one detection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFacts {
    /// `iptables`, `ipvs`, `nftables`, or `none`.
    pub kube_proxy_mode: String,
    /// `metrics_endpoint` (kube-proxy said so) or `node_state`.
    pub mode_source: &'static str,
    pub confidence: &'static str,
    /// The backend holding kube-proxy's iptables rules (`iptables-legacy`,
    /// `iptables-nft`, `both`), or `none`.
    pub iptables_backend: String,
    pub counts: Vec<ServiceCount>,
    /// Inputs detection could not read (`detect`'s `unreadable`): their
    /// counts are missing from `counts` rather than reported as 0.
    pub unreadable: Vec<&'static str>,
    /// Counts where netlink and the tool both answered and differ
    /// (`counted_in what`, as `detect`'s `count_sources` names them).
    pub disagreements: Vec<String>,
}

impl NodeFacts {
    pub fn of(n: &NodeFindings) -> NodeFacts {
        let mode = n.proxy_mode.mode;
        let backend = &n.iptables_backend;
        let iptables_backend = match backend.active {
            Some(active) => active.to_string(),
            None => match backend.kube_proxy_chains_in {
                Backends::None => "none".to_owned(),
                Backends::Legacy => IptablesFlavour::Legacy.to_string(),
                Backends::Nft => IptablesFlavour::Nft.to_string(),
                Backends::Both => "both".to_owned(),
            },
        };
        let mut counts = Vec::new();
        for t in &n.services.iptables {
            // IPVS mode's iptables rules have no per-service chains: only
            // iptables mode's state counts services here.
            // A backend whose save tool could not print a table counts
            // nothing there: unknown, not 0 (pathcost_detection_unreadable_inputs).
            if (t.rules.service_ports == 0 && t.rules.endpoint_chains == 0) || !t.unreadable_tables.is_empty() {
                continue;
            }
            counts.push(ServiceCount {
                mode: KubeProxyMode::Iptables.as_str(),
                source: t.backend.to_string(),
                active: mode == Some(KubeProxyMode::Iptables) && backend.active == Some(t.backend),
                services: t.rules.service_ports as u64,
                endpoints: Some(t.rules.endpoint_chains as u64),
                counted_by: CountSource::Tool.as_str(),
            });
        }
        if let Some(v) = n.services.ipvs.as_ref().and_then(|i| Some((i.virtual_servers?, i.real_servers))) {
            counts.push(ServiceCount {
                mode: KubeProxyMode::Ipvs.as_str(),
                source: "ipvs".to_owned(),
                active: mode == Some(KubeProxyMode::Ipvs),
                services: v.0 as u64,
                endpoints: v.1.map(|e| e as u64),
                counted_by: CountSource::Tool.as_str(),
            });
        }
        for t in &n.services.nftables {
            counts.push(ServiceCount {
                mode: KubeProxyMode::Nftables.as_str(),
                source: format!("nftables {}", t.family),
                active: mode == Some(KubeProxyMode::Nftables),
                services: t.service_chains as u64,
                endpoints: Some(t.endpoint_chains as u64),
                counted_by: CountSource::Tool.as_str(),
            });
        }
        NodeFacts {
            kube_proxy_mode: mode.map_or("none", KubeProxyMode::as_str).to_owned(),
            mode_source: match n.proxy_mode.source {
                detection::ModeSource::MetricsEndpoint => "metrics_endpoint",
                detection::ModeSource::NodeState => "node_state",
            },
            confidence: match n.proxy_mode.confidence {
                detection::Confidence::Low => "low",
                detection::Confidence::Medium => "medium",
                detection::Confidence::High => "high",
            },
            iptables_backend,
            counts,
            unreadable: n.unreadable.iter().map(|u| u.input).collect(),
            disagreements: Vec::new(),
        }
    }
}

impl NodeFacts {
    /// [`NodeFacts::of`] with netlink's figures where the kernel answered:
    /// they replace the tool's, and fill in a count whose tool could not be
    /// read (version skew), so it is exported instead of missing.
    pub fn of_detection(d: &Detection) -> NodeFacts {
        NodeFacts::of_sourced(&d.node, &d.count_sources)
    }

    /// [`NodeFacts::of_detection`] from its two parts.
    pub fn of_sourced(node: &NodeFindings, sources: &[SourcedCount]) -> NodeFacts {
        let mut facts = NodeFacts::of(node);
        facts.disagreements = sources.iter().filter(|c| c.disagree).map(|c| format!("{} {}", c.counted_in, c.what)).collect();
        let mode = node.proxy_mode.mode;
        let netlink = |counted_in: &str, what: &str| {
            sources
                .iter()
                .find(|c| c.counted_in == counted_in && c.what == what && c.answered_by == Some(CountSource::Netlink))
                .and_then(|c| c.value)
        };
        for c in sources {
            let services_what = if c.counted_in == "ipvs" { "virtual_servers" } else { "service_ports" };
            if c.what != services_what {
                continue;
            }
            let Some(services) = netlink(&c.counted_in, services_what) else { continue };
            let endpoints = netlink(&c.counted_in, "endpoints").map(|e| e as u64);
            if let Some(count) = facts.counts.iter_mut().find(|f| f.source == c.counted_in) {
                count.services = services as u64;
                // IPVS real servers are counted from /proc only.
                if endpoints.is_some() {
                    count.endpoints = endpoints;
                }
                count.counted_by = CountSource::Netlink.as_str();
            } else if services > 0 {
                let (count_mode, active) = if c.counted_in == "ipvs" {
                    (KubeProxyMode::Ipvs, mode == Some(KubeProxyMode::Ipvs))
                } else if c.counted_in.starts_with("nftables") {
                    (KubeProxyMode::Nftables, mode == Some(KubeProxyMode::Nftables))
                } else {
                    let active = mode == Some(KubeProxyMode::Iptables)
                        && node.iptables_backend.active.is_none_or(|b| b.to_string() == c.counted_in);
                    (KubeProxyMode::Iptables, active)
                };
                facts.counts.push(ServiceCount {
                    mode: count_mode.as_str(),
                    source: c.counted_in.clone(),
                    active,
                    services: services as u64,
                    endpoints,
                    counted_by: CountSource::Netlink.as_str(),
                });
            }
        }
        facts
    }
}

/// The latest detection, shared between the refresher and the scrapes.
#[derive(Debug, Default)]
pub struct NodeSlot {
    inner: RwLock<NodeSnapshot>,
}

/// A copy of the slot, taken for one scrape.
#[derive(Clone, Debug, Default)]
pub struct NodeSnapshot {
    /// `None` until a detection succeeded.
    pub facts: Option<NodeFacts>,
    pub runs_ok: u64,
    pub runs_failed: u64,
    pub last_success_unix: Option<f64>,
    /// When the last run completed (any outcome) and last succeeded, on
    /// the monotonic clock the health checks measure ages with.
    pub last_run: Option<Instant>,
    pub last_success: Option<Instant>,
}

impl NodeSlot {
    pub fn update(&self, result: anyhow::Result<Detection>) {
        let mut s = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        s.last_run = Some(now);
        match result {
            Ok(d) => {
                let facts = NodeFacts::of_detection(&d);
                // Said once per change, not every --refresh: a node that
                // keeps its version skew keeps its metric.
                let before = s.facts.as_ref().map(|f| f.unreadable.as_slice()).unwrap_or_default();
                if facts.unreadable != before {
                    for u in &d.node.unreadable {
                        log::warn!("node detection cannot read {}: {}", u.input, u.reason);
                    }
                }
                let before = s.facts.as_ref().map(|f| f.disagreements.as_slice()).unwrap_or_default();
                if facts.disagreements != before {
                    for c in d.count_sources.iter().filter(|c| c.disagree) {
                        log::warn!(
                            "{} {}: netlink counts {} but the tool counts {} (netlink's figure is exported)",
                            c.counted_in,
                            c.what,
                            c.netlink.unwrap_or(0),
                            c.tool.unwrap_or(0)
                        );
                    }
                }
                s.facts = Some(facts);
                s.runs_ok += 1;
                s.last_success = Some(now);
                s.last_success_unix = SystemTime::now().duration_since(UNIX_EPOCH).ok().map(|t| t.as_secs_f64());
            }
            Err(e) => {
                // Keep the last facts: a node does not change mode because
                // one listing failed.
                log::warn!("node detection failed: {e:#}");
                s.runs_failed += 1;
            }
        }
    }

    pub fn snapshot(&self) -> NodeSnapshot {
        self.inner.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Re-runs detection on its own thread until dropped.
pub struct Refresher {
    // Dropping the sender wakes the thread, which then exits.
    _stop: mpsc::Sender<()>,
}

impl Refresher {
    /// Detects now, then every `every` (`None`: only now).
    pub fn spawn(slot: Arc<NodeSlot>, options: CollectOptions, every: Option<Duration>) -> anyhow::Result<Refresher> {
        let (stop, stopped) = mpsc::channel::<()>();
        thread::Builder::new().name("pathcost-detect".into()).spawn(move || loop {
            slot.update(detection::detect_with(&options));
            let Some(every) = every else { return };
            // Any message or a dropped sender means stop.
            if !matches!(stopped.recv_timeout(every), Err(mpsc::RecvTimeoutError::Timeout)) {
                return;
            }
        })?;
        Ok(Refresher { _stop: stop })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detection::{analyse, Input, NodeState};

    fn state(legacy_save: &str) -> NodeState {
        let absent = || Input::Absent("not here".into());
        NodeState {
            proxy_mode: Input::Absent("nothing answers".into()),
            ip_tables_names: Input::Text("nat\nfilter\n".into()),
            ip6_tables_names: Input::Text(String::new()),
            iptables_legacy_save: Input::Text(legacy_save.into()),
            iptables_nft_save: absent(),
            nft: absent(),
            ip_vs: absent(),
            kube_ipvs0: absent(),
            ipset_names: Input::Text(String::new()),
            ipset_cluster_ip: absent(),
        }
    }

    #[test]
    fn iptables_mode_in_legacy_gives_mode_backend_and_counts() {
        let save = include_str!("../synthesis/fixtures/iptables_2x2.save");
        let facts = NodeFacts::of(&analyse(&state(save)));
        assert_eq!(facts.kube_proxy_mode, "iptables");
        assert_eq!(facts.mode_source, "node_state");
        assert_eq!(facts.iptables_backend, "iptables-legacy");
        let active: Vec<&ServiceCount> = facts.counts.iter().filter(|c| c.active).collect();
        assert_eq!(active.len(), 1, "{facts:?}");
        assert_eq!(active[0].source, "iptables-legacy");
        assert!(active[0].services > 0 && active[0].endpoints.unwrap() > 0, "{facts:?}");
    }

    #[test]
    fn a_node_without_kube_proxy_says_none() {
        let facts = NodeFacts::of(&analyse(&state("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n")));
        assert_eq!(facts.kube_proxy_mode, "none");
        assert_eq!(facts.iptables_backend, "none");
        assert!(facts.counts.is_empty());
    }

    #[test]
    fn an_unreadable_table_is_exported_as_unreadable_not_as_zero_services() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/detection/fixtures/iptables-nft-version-skew");
        let facts = NodeFacts::of(&analyse(&NodeState::load_dir(&dir).unwrap()));
        assert_eq!(facts.unreadable, ["iptables-nft rules"], "{facts:?}");
        assert!(facts.counts.iter().all(|c| c.source != "iptables-nft"), "no iptables-nft count at all: {facts:?}");
    }

    #[test]
    fn netlink_fills_in_the_count_a_skewed_tool_cannot_read() {
        use crate::detection::{
            nftables::NftObjects,
            sources::{compare, NetlinkAnswers},
        };
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/detection/fixtures/iptables-nft-version-skew");
        let state = NodeState::load_dir(&dir).unwrap();
        let mut node = analyse(&state);
        // What nf_tables holds for three service ports, one with both
        // policies, and four endpoints.
        let mut kernel = NftObjects::default();
        kernel.add_table("ip", "nat");
        for chain in ["KUBE-SERVICES", "KUBE-SVC-A", "KUBE-SVL-A", "KUBE-SVC-B", "KUBE-SVC-C"] {
            kernel.add_chain("ip", "nat", chain);
        }
        for chain in ["KUBE-SEP-1", "KUBE-SEP-2", "KUBE-SEP-3", "KUBE-SEP-4"] {
            kernel.add_chain("ip", "nat", chain);
        }
        let answers = NetlinkAnswers { nf_tables: Some(Ok(kernel)), ipvs: None };
        let sources = compare(&mut node, &state, &answers);
        let facts = NodeFacts::of_sourced(&node, &sources);
        // The tool stays unreadable; the kernel's figure is exported, said to be netlink's.
        assert_eq!(facts.unreadable, ["iptables-nft rules"], "{facts:?}");
        let c = facts.counts.iter().find(|c| c.source == "iptables-nft").expect("an iptables-nft count");
        assert_eq!((c.services, c.endpoints, c.counted_by), (3, Some(4), "netlink"), "{facts:?}");
        assert!(facts.disagreements.is_empty());
    }

    #[test]
    fn a_failed_detection_keeps_the_last_facts_and_counts_the_failure() {
        let slot = NodeSlot::default();
        slot.update(Err(anyhow::anyhow!("boom")));
        let s = slot.snapshot();
        assert!(s.facts.is_none());
        assert_eq!((s.runs_ok, s.runs_failed), (0, 1));
        assert!(s.last_success_unix.is_none());
    }
}
