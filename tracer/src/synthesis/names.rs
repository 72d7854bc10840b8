//! kube-proxy's per-service chain names, hashed exactly as kube-proxy hashes them
//! (docs/kube-proxy-rules.md#iptables-chain-names and
//! docs/kube-proxy-rules.md#nftables-chain-names), so
//! that synthetic rulesets are indistinguishable from real ones by name.

use std::fmt;

use sha2::{Digest, Sha256};

use super::cluster::{Endpoint, Protocol, ServicePortName};

/// The name of an iptables or nftables chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChainName(String);

impl ChainName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ChainName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// knftables' `NameLengthMax` (256) minus the longest prefix kube-proxy puts in
/// front (16): hashed nftables base names are cut to this length.
const NFT_CHAIN_NAME_BASE_LENGTH_MAX: usize = 240;

/// RFC 4648 base32 with the standard alphabet and `=` padding, what Go's
/// `base32.StdEncoding.EncodeToString` produces.
pub fn base32_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    for chunk in bytes.chunks(5) {
        let mut block = [0u8; 5];
        block[..chunk.len()].copy_from_slice(chunk);
        let bits = block.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        // Output characters that carry at least one input bit; the rest is padding.
        let significant = (chunk.len() * 8).div_ceil(5);
        for i in 0..8 {
            if i < significant {
                let index = (bits >> (35 - 5 * i)) & 0x1f;
                out.push(char::from(ALPHABET[index as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// base32(SHA-256(input)), 56 characters; kube-proxy keeps a prefix of it.
fn sha256_base32(input: &str) -> String {
    base32_encode(&Sha256::digest(input.as_bytes()))
}

/// The 16-character hash shared by `KUBE-SVC-`, `KUBE-SVL-`, `KUBE-EXT-` and
/// `KUBE-FW-` chains: SHA-256 of `servicePortName + protocol`, no separator.
pub fn service_port_hash(name: &ServicePortName, protocol: Protocol) -> String {
    let mut hash = sha256_base32(&format!("{name}{protocol}"));
    hash.truncate(16);
    hash
}

/// `KUBE-SVC-<hash>`: the iptables chain that load-balances one service port.
pub fn iptables_service_chain(name: &ServicePortName, protocol: Protocol) -> ChainName {
    ChainName(format!("KUBE-SVC-{}", service_port_hash(name, protocol)))
}

/// `KUBE-SEP-<hash>`: the iptables chain that DNATs to one endpoint; the hash covers
/// `servicePortName + protocol + "IP:port"`.
pub fn iptables_endpoint_chain(
    name: &ServicePortName,
    protocol: Protocol,
    endpoint: &Endpoint,
) -> ChainName {
    let mut hash = sha256_base32(&format!("{name}{protocol}{endpoint}"));
    hash.truncate(16);
    ChainName(format!("KUBE-SEP-{hash}"))
}

/// kube-proxy's nftables `hashAndTruncate`: prefix the base with 8 hash characters
/// (readable and still unique if the tail is cut), then cut to 240 bytes ending in
/// `...`. Our bases are ASCII, so byte and character counts agree.
fn nft_hash_and_truncate(base: &str) -> String {
    let hash = sha256_base32(base);
    let mut name = format!("{}-{base}", &hash[..8]);
    if name.len() > NFT_CHAIN_NAME_BASE_LENGTH_MAX {
        name.truncate(NFT_CHAIN_NAME_BASE_LENGTH_MAX - 3);
        name.push_str("...");
    }
    name
}

/// `ns/svc/proto/portname`: "/" is allowed in nft chain names but in none of the
/// parts, so the parts stay unambiguous.
fn nft_service_base(name: &ServicePortName, protocol: Protocol) -> String {
    format!(
        "{}/{}/{protocol}/{}",
        name.namespace, name.service, name.port_name
    )
}

/// `service-<H8>-ns/svc/proto/portname`: the nftables Cluster-policy chain.
pub fn nft_service_chain(name: &ServicePortName, protocol: Protocol) -> ChainName {
    ChainName(format!(
        "service-{}",
        nft_hash_and_truncate(&nft_service_base(name, protocol))
    ))
}

/// `endpoint-<H8>-ns/svc/proto/portname__IP/port`: the nftables endpoint chain.
/// (kube-proxy turns IPv6 colons into dots here; our endpoints are IPv4.)
pub fn nft_endpoint_chain(
    name: &ServicePortName,
    protocol: Protocol,
    endpoint: &Endpoint,
) -> ChainName {
    let base = format!(
        "{}__{}/{}",
        nft_service_base(name, protocol),
        endpoint.ip,
        endpoint.port
    );
    ChainName(format!("endpoint-{}", nft_hash_and_truncate(&base)))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn spn(k: u32) -> ServicePortName {
        ServicePortName {
            namespace: format!("ns{k}"),
            service: format!("svc{k}"),
            port_name: "p80".to_owned(),
        }
    }

    fn ep(a: u8, b: u8, c: u8, d: u8) -> Endpoint {
        Endpoint {
            ip: Ipv4Addr::new(a, b, c, d),
            port: 80,
        }
    }

    #[test]
    fn base32_rfc4648_vectors() {
        // RFC 4648 §10.
        for (input, expected) in [
            ("", ""),
            ("f", "MY======"),
            ("fo", "MZXQ===="),
            ("foo", "MZXW6==="),
            ("foob", "MZXW6YQ="),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI======"),
        ] {
            assert_eq!(base32_encode(input.as_bytes()), expected, "input {input:?}");
        }
        assert_eq!(sha256_base32("x").len(), 56);
    }

    #[test]
    fn iptables_hashes_from_the_spec() {
        let tcp = Protocol::Tcp;
        assert_eq!(
            iptables_service_chain(&spn(1), tcp).as_str(),
            "KUBE-SVC-XPGD46QRK7WJZT7O"
        );
        assert_eq!(
            iptables_service_chain(&spn(2), tcp).as_str(),
            "KUBE-SVC-GNZBNJ2PO5MGZ6GT"
        );
        for (k, endpoint, expected) in [
            (1, ep(10, 180, 0, 1), "KUBE-SEP-SXIVWICOYRO3J4NJ"),
            (1, ep(10, 180, 2, 1), "KUBE-SEP-ZX7GRIZKSNUQ3LAJ"),
            (2, ep(10, 180, 0, 2), "KUBE-SEP-RS4RBKLTHTF2IUXJ"),
            (2, ep(10, 180, 2, 2), "KUBE-SEP-YVURCJ2PNPRIOEBP"),
        ] {
            assert_eq!(
                iptables_endpoint_chain(&spn(k), tcp, &endpoint).as_str(),
                expected
            );
        }
    }

    #[test]
    fn nftables_hashes_from_the_spec() {
        let tcp = Protocol::Tcp;
        assert_eq!(
            nft_service_chain(&spn(1), tcp).as_str(),
            "service-ULMVA6XW-ns1/svc1/tcp/p80"
        );
        assert_eq!(
            nft_service_chain(&spn(2), tcp).as_str(),
            "service-42NFTM6N-ns2/svc2/tcp/p80"
        );
        for (k, endpoint, expected) in [
            (
                1,
                ep(10, 180, 0, 1),
                "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80",
            ),
            (
                1,
                ep(10, 180, 2, 1),
                "endpoint-MLKSHPWN-ns1/svc1/tcp/p80__10.180.2.1/80",
            ),
            (
                2,
                ep(10, 180, 0, 2),
                "endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80",
            ),
            (
                2,
                ep(10, 180, 2, 2),
                "endpoint-4YUYPWCE-ns2/svc2/tcp/p80__10.180.2.2/80",
            ),
        ] {
            assert_eq!(
                nft_endpoint_chain(&spn(k), tcp, &endpoint).as_str(),
                expected
            );
        }
    }

    #[test]
    fn unnamed_port_has_no_colon() {
        let name = ServicePortName {
            namespace: "ns1".to_owned(),
            service: "svc1".to_owned(),
            port_name: String::new(),
        };
        assert_eq!(name.to_string(), "ns1/svc1");
    }

    #[test]
    fn long_nft_names_are_cut_to_240_with_dots() {
        let name = ServicePortName {
            namespace: "n".repeat(63),
            service: "s".repeat(63),
            port_name: "p".repeat(63),
        };
        // IPv4 endpoints cannot reach the limit (kube-proxy says only long IPv6 can),
        // so exercise the cut directly.
        let long = nft_hash_and_truncate(&"x".repeat(300));
        assert_eq!(long.len(), 240);
        assert!(long.ends_with("..."));
        let chain = nft_endpoint_chain(&name, Protocol::Udp, &ep(10, 180, 0, 1));
        assert!(chain.as_str().len() <= 256);
        assert!(!chain.as_str().ends_with("..."));
    }
}
