//! Reads `nft -j list ...` output and counts kube-proxy's nftables-mode
//! objects: the `kube-proxy` table per family, its `service-*` and
//! `endpoint-*` chains, and the elements of `service-ips` and `cluster-ips`
//! (docs/kube-proxy-rules.md#nftables-mode,
//! docs/kube-proxy-rules.md#reading-a-node).
//!
//! Several documents (one per `nft -j` command) are merged, so the live
//! side can ask for little (`list tables`, `list chains`, two sets) instead
//! of the whole ruleset with every rule.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// kube-proxy's table name, in family `ip` and, for dual stack, `ip6`.
pub const KUBE_PROXY_TABLE: &str = "kube-proxy";

/// Why an `nft -j` document could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NftJsonError {
    #[error("nft printed something that is not JSON")]
    Json(#[source] serde_json::Error),
    #[error("nft JSON has no top-level \"nftables\" array")]
    NoNftablesArray,
}

/// A set or map and its elements.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct SetContents {
    elements: usize,
    /// Map elements whose verdict is `goto service-...`.
    service_gotos: usize,
}

/// The tables, chains and sets found in one or more `nft -j` documents.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NftObjects {
    /// (family, table) pairs.
    pub tables: Vec<(String, String)>,
    /// Chain names per (family, table).
    chains: BTreeMap<(String, String), Vec<String>>,
    /// Sets and maps per (family, table, name).
    sets: BTreeMap<(String, String, String), SetContents>,
}

fn str_field<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}

impl NftObjects {
    /// Adds the objects of one `nft -j` document.
    pub fn add_document(&mut self, text: &str) -> Result<(), NftJsonError> {
        let root: Value = serde_json::from_str(text).map_err(NftJsonError::Json)?;
        let items = root
            .get("nftables")
            .and_then(Value::as_array)
            .ok_or(NftJsonError::NoNftablesArray)?;
        for item in items {
            if let Some(t) = item.get("table") {
                if let (Some(f), Some(n)) = (str_field(t, "family"), str_field(t, "name")) {
                    let key = (f.to_owned(), n.to_owned());
                    if !self.tables.contains(&key) {
                        self.tables.push(key);
                    }
                }
            } else if let Some(c) = item.get("chain") {
                if let (Some(f), Some(t), Some(n)) = (
                    str_field(c, "family"),
                    str_field(c, "table"),
                    str_field(c, "name"),
                ) {
                    let chains = self.chains.entry((f.to_owned(), t.to_owned())).or_default();
                    if !chains.iter().any(|x| x == n) {
                        chains.push(n.to_owned());
                    }
                }
            } else if let Some(s) = item.get("set").or_else(|| item.get("map")) {
                if let (Some(f), Some(t), Some(n)) = (
                    str_field(s, "family"),
                    str_field(s, "table"),
                    str_field(s, "name"),
                ) {
                    let elems = s.get("elem").and_then(Value::as_array);
                    let contents = SetContents {
                        elements: elems.map_or(0, Vec::len),
                        service_gotos: elems
                            .map_or(0, |e| e.iter().filter(|x| is_service_goto(x)).count()),
                    };
                    // A later, element-bearing listing wins over a bare declaration.
                    let entry = self
                        .sets
                        .entry((f.to_owned(), t.to_owned(), n.to_owned()))
                        .or_default();
                    if contents.elements >= entry.elements {
                        *entry = contents;
                    }
                }
            }
        }
        Ok(())
    }

    /// Parses documents one per non-empty line (what `nft -j` prints).
    pub fn parse_lines(text: &str) -> Result<NftObjects, NftJsonError> {
        let mut objects = NftObjects::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            objects.add_document(line)?;
        }
        Ok(objects)
    }

    /// Adds a table read another way than `nft -j` (netlink).
    pub(crate) fn add_table(&mut self, family: &str, name: &str) {
        let key = (family.to_owned(), name.to_owned());
        if !self.tables.contains(&key) {
            self.tables.push(key);
        }
    }

    /// Adds a chain read another way than `nft -j` (netlink).
    pub(crate) fn add_chain(&mut self, family: &str, table: &str, name: &str) {
        self.chains
            .entry((family.to_owned(), table.to_owned()))
            .or_default()
            .push(name.to_owned());
    }

    /// Adds elements of a set or map read another way than `nft -j`
    /// (netlink, which answers a large set in several messages: they add
    /// up). `goto_targets` are the chains its verdict elements `goto`.
    pub(crate) fn add_set_elements<'a>(
        &mut self,
        family: &str,
        table: &str,
        set: &str,
        goto_targets: impl Iterator<Item = Option<&'a str>>,
    ) {
        let entry = self
            .sets
            .entry((family.to_owned(), table.to_owned(), set.to_owned()))
            .or_default();
        for target in goto_targets {
            entry.elements += 1;
            entry.service_gotos +=
                usize::from(target.is_some_and(|t| is_hashed_chain(t, "service-")));
        }
    }

    /// The chain names of one table.
    pub fn chains_of(&self, family: &str, table: &str) -> &[String] {
        self.chains
            .get(&(family.to_owned(), table.to_owned()))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Families that have a `kube-proxy` table.
    pub fn kube_proxy_families(&self) -> Vec<String> {
        self.tables
            .iter()
            .filter(|(_, name)| name == KUBE_PROXY_TABLE)
            .map(|(family, _)| family.clone())
            .collect()
    }

    /// The counts of kube-proxy's table in `family`, if it exists.
    pub fn kube_proxy_table(&self, family: &str) -> Option<NftablesServices> {
        let key = (family.to_owned(), KUBE_PROXY_TABLE.to_owned());
        if !self.tables.contains(&key) {
            return None;
        }
        let chains = self.chains.get(&key).map(Vec::as_slice).unwrap_or_default();
        let set = |name: &str| {
            self.sets.get(&(
                family.to_owned(),
                KUBE_PROXY_TABLE.to_owned(),
                name.to_owned(),
            ))
        };
        Some(NftablesServices {
            family: family.to_owned(),
            chains: chains.len(),
            service_chains: chains
                .iter()
                .filter(|c| is_hashed_chain(c, "service-"))
                .count(),
            endpoint_chains: chains
                .iter()
                .filter(|c| is_hashed_chain(c, "endpoint-"))
                .count(),
            service_ips_elements: set("service-ips").map(|s| s.elements),
            service_ips_service_gotos: set("service-ips").map(|s| s.service_gotos),
            cluster_ips: set("cluster-ips").map(|s| s.elements),
        })
    }
}

/// `service-ULMVA6XW-ns1/svc1/tcp/p80`: the prefix, 8 base32 characters of
/// the name's hash, a dash
/// (docs/kube-proxy-rules.md#nftables-chain-names). The fixed `service-endpoints-check` chain
/// shares the prefix but not the shape.
pub(crate) fn is_hashed_chain(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix).is_some_and(|rest| {
        let b = rest.as_bytes();
        b.len() > 9
            && b[8] == b'-'
            && b[..8]
                .iter()
                .all(|c| c.is_ascii_uppercase() || (b'2'..=b'7').contains(c))
    })
}

/// `[key, {"goto": {"target": "service-..."}}]`.
fn is_service_goto(elem: &Value) -> bool {
    elem.as_array()
        .and_then(|pair| pair.get(1))
        .and_then(|v| v.get("goto"))
        .and_then(|g| str_field(g, "target"))
        .is_some_and(|t| is_hashed_chain(t, "service-"))
}

/// kube-proxy's nftables-mode objects in one family.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NftablesServices {
    /// `ip` or `ip6`.
    pub family: String,
    /// All chains of the table, fixed ones included (0 when chains were not
    /// listed).
    pub chains: usize,
    /// `service-*` chains: one per service port with endpoints.
    pub service_chains: usize,
    /// `endpoint-*` chains: one per endpoint.
    pub endpoint_chains: usize,
    /// Elements of the `service-ips` verdict map (ClusterIP, ExternalIP and
    /// LoadBalancer triples); `None` when the map was not listed.
    pub service_ips_elements: Option<usize>,
    /// Of those, the ones that `goto service-...`: service ports reached by
    /// ClusterIP.
    pub service_ips_service_gotos: Option<usize>,
    /// Elements of `cluster-ips` (every ClusterIP, with or without endpoints);
    /// `None` when the set was not listed (it is missing before 1.30).
    pub cluster_ips: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLES: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "ip", "name": "nat", "handle": 3}}, {"table": {"family": "ip", "name": "kube-proxy", "handle": 4}}]}"#;
    const CHAINS: &str = r#"{"nftables": [{"chain": {"family": "ip", "table": "kube-proxy", "name": "services", "handle": 1}}, {"chain": {"family": "ip", "table": "kube-proxy", "name": "service-endpoints-check", "handle": 4}}, {"chain": {"family": "ip", "table": "kube-proxy", "name": "service-ULMVA6XW-ns1/svc1/tcp/p80", "handle": 2}}, {"chain": {"family": "ip", "table": "kube-proxy", "name": "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80", "handle": 3}}, {"chain": {"family": "ip", "table": "nat", "name": "KUBE-SERVICES", "handle": 9}}]}"#;
    const MAP: &str = r#"{"nftables": [{"map": {"family": "ip", "name": "service-ips", "table": "kube-proxy", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 28, "map": "verdict", "elem": [[{"concat": ["172.30.0.41", "tcp", 80]}, {"goto": {"target": "service-ULMVA6XW-ns1/svc1/tcp/p80"}}], [{"concat": ["192.0.2.9", "tcp", 80]}, {"goto": {"target": "external-ULMVA6XW-ns1/svc1/tcp/p80"}}]]}}]}"#;

    #[test]
    fn merges_documents_and_counts_kube_proxy_objects() {
        let objects = NftObjects::parse_lines(&[TABLES, CHAINS, MAP].join("\n")).unwrap();
        assert_eq!(objects.kube_proxy_families(), ["ip"]);
        let t = objects.kube_proxy_table("ip").unwrap();
        assert_eq!(t.chains, 4);
        assert_eq!(t.service_chains, 1);
        assert_eq!(t.endpoint_chains, 1);
        assert_eq!(t.service_ips_elements, Some(2));
        assert_eq!(t.service_ips_service_gotos, Some(1));
        assert_eq!(t.cluster_ips, None);
        assert!(objects.kube_proxy_table("ip6").is_none());
    }

    #[test]
    fn rejects_text_that_is_not_nft_json() {
        assert!(NftObjects::parse_lines("table ip kube-proxy {").is_err());
        assert!(NftObjects::parse_lines("{\"x\": 1}").is_err());
        assert!(NftObjects::parse_lines("").unwrap().tables.is_empty());
    }
}
