//! Asks kube-proxy which mode it runs: `GET /proxyMode` on its metrics
//! server (default `127.0.0.1:10249`), which answers the mode as plain
//! text (docs/kube-proxy-rules.md#reading-a-node). A plain HTTP/1.0 request over a
//! `TcpStream` with short timeouts: a node without kube-proxy must not slow
//! `detect` down.

use std::{
    fmt,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    str::FromStr,
    time::Duration,
};

use serde::Serialize;

/// kube-proxy's default metrics address (`ProxyStatusPort` 10249).
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:10249";
/// Connect and read timeout of the query.
pub const QUERY_TIMEOUT: Duration = Duration::from_millis(300);
/// More than any `/proxyMode` answer; a longer one is not kube-proxy.
const MAX_RESPONSE: u64 = 16 * 1024;

/// A kube-proxy proxy mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KubeProxyMode {
    Iptables,
    Ipvs,
    Nftables,
    /// Windows' mode; never seen on Linux, kept so an answer is not lost.
    Kernelspace,
}

impl KubeProxyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            KubeProxyMode::Iptables => "iptables",
            KubeProxyMode::Ipvs => "ipvs",
            KubeProxyMode::Nftables => "nftables",
            KubeProxyMode::Kernelspace => "kernelspace",
        }
    }
}

impl fmt::Display for KubeProxyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KubeProxyMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "iptables" => Ok(KubeProxyMode::Iptables),
            "ipvs" => Ok(KubeProxyMode::Ipvs),
            "nftables" => Ok(KubeProxyMode::Nftables),
            "kernelspace" => Ok(KubeProxyMode::Kernelspace),
            other => Err(format!("'{other}' is not a kube-proxy mode")),
        }
    }
}

/// Why `/proxyMode` gave no mode.
#[derive(Debug, thiserror::Error)]
pub enum ProxyModeError {
    #[error("nothing answers at {addr} ({source})")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr} did not answer in time ({source})")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr} answered HTTP status {status}")]
    Status { addr: SocketAddr, status: String },
    #[error("{addr} answered something that is not a kube-proxy mode: {answer}")]
    NotAMode { addr: SocketAddr, answer: String },
}

/// Asks `addr` for `/proxyMode`.
pub fn query(addr: SocketAddr, timeout: Duration) -> Result<KubeProxyMode, ProxyModeError> {
    let io = |source| ProxyModeError::Io { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|source| ProxyModeError::Connect { addr, source })?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    // HTTP/1.0 with Connection: close, so the server ends the body by closing.
    let host = match addr {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    };
    // One write: a request split over several segments is still valid, but
    // some servers answer and close after the first, resetting the rest.
    let request = format!("GET /proxyMode HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut response = Vec::new();
    stream
        .take(MAX_RESPONSE)
        .read_to_end(&mut response)
        .map_err(io)?;
    let response = String::from_utf8_lossy(&response);
    let (status, body) = split_response(&response);
    if status != "200" {
        return Err(ProxyModeError::Status {
            addr,
            status: status.to_owned(),
        });
    }
    body.parse().map_err(|_| ProxyModeError::NotAMode {
        addr,
        answer: shorten(body),
    })
}

/// (status code, body) of an HTTP/1.x response; a chunked body is joined.
fn split_response(response: &str) -> (&str, String) {
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((response, ""));
    let status = head.split_whitespace().nth(1).unwrap_or("none");
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn shorten(s: String) -> String {
    let s = s.trim();
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => format!("'{s}'"),
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    /// Serves one connection with `response` on a loopback port.
    fn serve_once(response: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            // Read the whole request first: closing with unread input resets
            // the connection and the client loses the answer.
            let mut request = Vec::new();
            let mut buf = [0u8; 512];
            while !request.ends_with(b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            s.write_all(response.as_bytes()).unwrap();
        });
        addr
    }

    #[test]
    fn reads_the_mode_from_a_plain_answer() {
        let addr = serve_once(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 8\r\n\r\nnftables",
        );
        assert_eq!(query(addr, QUERY_TIMEOUT).unwrap(), KubeProxyMode::Nftables);
    }

    #[test]
    fn reads_a_chunked_answer() {
        let addr = serve_once(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nipvs\r\n0\r\n\r\n",
        );
        assert_eq!(query(addr, QUERY_TIMEOUT).unwrap(), KubeProxyMode::Ipvs);
    }

    #[test]
    fn other_servers_and_errors_are_not_modes() {
        let addr = serve_once("HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found");
        assert!(matches!(
            query(addr, QUERY_TIMEOUT),
            Err(ProxyModeError::Status { .. })
        ));
        let addr = serve_once("HTTP/1.1 200 OK\r\n\r\n<html>hello</html>");
        assert!(matches!(
            query(addr, QUERY_TIMEOUT),
            Err(ProxyModeError::NotAMode { .. })
        ));
        // Port 0 never has a listener (a freed ephemeral port could be taken
        // by another test's server in the meantime).
        let err = query("127.0.0.1:0".parse().unwrap(), QUERY_TIMEOUT).unwrap_err();
        assert!(matches!(err, ProxyModeError::Connect { .. }), "{err}");
    }
}
