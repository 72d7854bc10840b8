//! The smallest HTTP/1.1 server Prometheus and the kubelet need:
//! `GET /metrics` (the exposition, in the format the `Accept` header asks
//! for; 503 until the probes are attached), `GET /healthz` and `/readyz`
//! (200 or 503, see [`super::health`]) and a one-line index at `/`; 404
//! elsewhere, 405 for other methods. One request per connection, bounded
//! in size and time, so a slow or hostile client costs a task and nothing
//! else. It starts before the probes are attached, so the kubelet's
//! start-up probe gets an answer that says what is still missing.

use std::{
    net::{IpAddr, SocketAddr},
    str::FromStr,
    sync::{Arc, OnceLock},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{TcpListener, TcpStream},
    sync::watch,
};

use super::{health::Health, CostMetrics, Exposition};

/// What the server answers from: the health state from the start, the
/// metrics once the probes are attached.
pub struct Endpoints {
    pub health: Arc<Health>,
    metrics: OnceLock<Arc<CostMetrics>>,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints").field("health", &self.health).finish_non_exhaustive()
    }
}

impl Endpoints {
    pub fn new(health: Arc<Health>) -> Endpoints {
        Endpoints { health, metrics: OnceLock::new() }
    }

    /// Starts answering `/metrics` (once; later calls are ignored).
    pub fn set_metrics(&self, metrics: Arc<CostMetrics>) {
        let _ = self.metrics.set(metrics);
    }
}

/// `serve --listen`: `IP:PORT`, `[IPv6]:PORT`, and also `[IPv4]:PORT`, so
/// that one template, `[$(NODE_IP)]:9470` in the DaemonSet, is valid
/// whichever family the downward API's `status.hostIP` has (an IPv6
/// address followed by `:9470` without brackets would read as one
/// address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenAddress(pub SocketAddr);

impl FromStr for ListenAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<ListenAddress, String> {
        let bad = || format!("'{s}' is not an address and port such as 127.0.0.1:9470, [10.0.0.5]:9470 or [::1]:9470");
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(ListenAddress(a));
        }
        let (host, port) = s.strip_prefix('[').and_then(|r| r.split_once("]:")).ok_or_else(bad)?;
        let ip: IpAddr = host.parse().map_err(|_| bad())?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        Ok(ListenAddress(SocketAddr::new(ip, port)))
    }
}

/// Longest request head accepted; scrapers send a few hundred bytes.
const MAX_REQUEST: usize = 16 * 1024;
/// A connection that has not sent its request and read the answer by then
/// is dropped.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// What a request asked for, from its head.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The target without its query.
    pub path: &'a str,
    pub accept: Option<&'a str>,
}

/// Reads a request head (up to the blank line, without it); `None` when it
/// is not an HTTP/1.x request line. Public for the fuzz target
/// (tests/tests/fuzz.rs): it reads bytes from the network.
pub fn parse_request(head: &str) -> Option<Request<'_>> {
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target, version) = (first.next()?, first.next()?, first.next()?);
    if !version.starts_with("HTTP/1.") || first.next().is_some() {
        return None;
    }
    let path = target.split('?').next().unwrap_or(target);
    let accept = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("accept"))
        .map(|(_, value)| value.trim());
    Some(Request { method, path, accept })
}

/// An answer; `allow` adds the `Allow` header of a 405.
struct Response {
    status: &'static str,
    content_type: &'static str,
    body: String,
    allow: bool,
}

impl Response {
    fn text(status: &'static str, body: &str) -> Response {
        Response { status, content_type: "text/plain; charset=utf-8", body: body.to_owned(), allow: false }
    }
}

fn health_response(verdict: super::health::Verdict) -> Response {
    let status = if verdict.ok() { "200 OK" } else { "503 Service Unavailable" };
    Response { status, content_type: "text/plain; charset=utf-8", body: verdict.body(), allow: false }
}

fn respond(request: Option<Request>, endpoints: &Endpoints) -> (Response, bool) {
    let Some(req) = request else {
        return (Response::text("400 Bad Request", "bad request\n"), false);
    };
    let head_only = req.method == "HEAD";
    if req.method != "GET" && !head_only {
        let mut r = Response::text("405 Method Not Allowed", "only GET and HEAD\n");
        r.allow = true;
        return (r, false);
    }
    let response = match req.path {
        "/metrics" => match endpoints.metrics.get() {
            Some(metrics) => {
                let format = Exposition::negotiate(req.accept);
                Response {
                    status: "200 OK",
                    content_type: format.content_type(),
                    body: metrics.encode(format),
                    allow: false,
                }
            }
            None => Response::text("503 Service Unavailable", "probes not attached yet\n"),
        },
        "/healthz" => health_response(endpoints.health.inputs().liveness()),
        "/readyz" => health_response(endpoints.health.inputs().readiness()),
        "/" => Response::text("200 OK", "pathcost: metrics at /metrics, health at /healthz and /readyz\n"),
        _ => Response::text("404 Not Found", "not found: try /metrics\n"),
    };
    (response, head_only)
}

/// Reads until the end of the request head (or a limit); `None` when the
/// client closed early or sent too much.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    // Never more than MAX_REQUEST bytes from the client: past it the reader
    // reads as closed. Every "\r\n\r\n" ends with a '\n', so looking after
    // each line finds the first one.
    let mut reader = BufReader::new(stream.take(MAX_REQUEST as u64));
    let mut head = Vec::new();
    loop {
        if reader.read_until(b'\n', &mut head).await? == 0 {
            return Ok(None);
        }
        if let Some(head) = head.strip_suffix(b"\r\n\r\n") {
            return Ok(Some(String::from_utf8_lossy(head).into_owned()));
        }
    }
}

async fn handle(mut stream: TcpStream, endpoints: Arc<Endpoints>) -> std::io::Result<()> {
    let head = read_head(&mut stream).await?;
    let (response, head_only) = respond(head.as_deref().and_then(parse_request), &endpoints);
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    if response.allow {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&response.body);
    }
    stream.write_all(out.as_bytes()).await
}

/// Answers scrapes on `listener` until `shutdown` turns true (or its
/// sender is dropped).
pub async fn serve(listener: TcpListener, endpoints: Arc<Endpoints>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let endpoints = Arc::clone(&endpoints);
                    tokio::spawn(async move {
                        match tokio::time::timeout(CONNECTION_TIMEOUT, handle(stream, endpoints)).await {
                            Ok(Err(e)) => log::debug!("metrics connection: {e}"),
                            Err(_) => log::debug!("metrics connection timed out"),
                            Ok(Ok(())) => {}
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: pause rather
                    // than spin, and keep serving.
                    log::warn!("accepting a metrics connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads_parse_method_path_and_accept() {
        let r =
            parse_request("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nACCEPT: application/openmetrics-text;version=1.0.0")
                .unwrap();
        assert_eq!(
            r,
            Request { method: "GET", path: "/metrics", accept: Some("application/openmetrics-text;version=1.0.0") }
        );
        assert_eq!(Exposition::negotiate(r.accept), Exposition::OpenMetrics);
        let r = parse_request("HEAD /healthz HTTP/1.0").unwrap();
        assert_eq!((r.method, r.path, r.accept), ("HEAD", "/healthz", None));
        assert_eq!(Exposition::negotiate(r.accept), Exposition::Prometheus);
        assert!(parse_request("GET /metrics").is_none());
        assert!(parse_request("GET / SPDY/3").is_none());
        assert!(parse_request("").is_none());
    }

    #[test]
    fn listen_addresses_take_either_family_in_brackets() {
        let parse = |s: &str| s.parse::<ListenAddress>().map(|a| a.0.to_string());
        assert_eq!(parse("0.0.0.0:9470").unwrap(), "0.0.0.0:9470");
        assert_eq!(parse("[10.1.2.3]:9470").unwrap(), "10.1.2.3:9470");
        assert_eq!(parse("[fd00::5]:9470").unwrap(), "[fd00::5]:9470");
        // What an unbracketed IPv6 node IP would give: refused, not
        // misread.
        assert!(parse("fd00::5:9470").is_err());
        assert!(parse("[node]:9470").is_err());
        assert!(parse("[10.1.2.3]").is_err());
    }

    /// The head as `read_head` reads it from a real connection, the client
    /// writing `parts` one at a time and keeping the connection open.
    async fn head_sent_as(parts: &[&[u8]]) -> Option<String> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        for part in parts {
            client.write_all(part).await.unwrap();
            client.flush().await.unwrap();
        }
        tokio::time::timeout(Duration::from_secs(10), read_head(&mut server)).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn a_head_ends_at_its_blank_line_even_split_across_writes() {
        let head = head_sent_as(&[b"GET /metrics HTTP/1.1\r\nHost: a\r", b"\n\r", b"\nbody"]).await;
        assert_eq!(head.as_deref(), Some("GET /metrics HTTP/1.1\r\nHost: a"));
        // Bare newlines do not end it; the limit does.
        let line = b"GET / HTTP/1.1\n\n";
        let lines = line.repeat(MAX_REQUEST / line.len() + 1);
        assert_eq!(head_sent_as(&[&lines]).await, None);
    }

    #[tokio::test]
    async fn a_head_over_the_limit_is_refused_without_waiting_for_more() {
        let long = vec![b'a'; MAX_REQUEST];
        assert_eq!(head_sent_as(&[&long, b"\r\n\r\n"]).await, None);
        // With its blank line, exactly MAX_REQUEST bytes.
        let just_fits = format!("GET /{} HTTP/1.1", "a".repeat(MAX_REQUEST - "GET / HTTP/1.1\r\n\r\n".len()));
        let head = head_sent_as(&[just_fits.as_bytes(), b"\r\n\r\n"]).await;
        assert_eq!(head.as_deref(), Some(just_fits.as_str()));
    }

    fn endpoints() -> Endpoints {
        let node = Arc::new(super::super::node::NodeSlot::default());
        Endpoints::new(Arc::new(Health::new(node, Some(Duration::from_secs(60)))))
    }

    fn get(endpoints: &Endpoints, path: &str) -> Response {
        respond(parse_request(&format!("GET {path} HTTP/1.1")), endpoints).0
    }

    #[test]
    fn before_the_probes_are_attached_everything_answers_503() {
        let e = endpoints();
        for path in ["/healthz", "/readyz", "/metrics"] {
            assert_eq!(get(&e, path).status, "503 Service Unavailable", "{path}");
        }
        assert!(get(&e, "/healthz").body.contains("probes: FAIL: still attaching"));
    }

    #[test]
    fn attached_and_polling_is_healthy_but_not_ready_until_detection_succeeds() {
        let e = endpoints();
        let site = crate::probes::attach::SiteStatus {
            site: "nf_hook_slow",
            symbol: None,
            module: None,
            mechanism: Some(crate::probes::Mechanism::Kprobe),
            notes: Vec::new(),
        };
        e.health.set_attached(&[site]);
        e.health.reader_polled();
        let healthz = get(&e, "/healthz");
        assert_eq!(healthz.status, "200 OK", "{}", healthz.body);
        let readyz = get(&e, "/readyz");
        assert_eq!(readyz.status, "503 Service Unavailable");
        assert!(readyz.body.contains("detection: FAIL: no detection has succeeded yet"), "{}", readyz.body);
    }
}
