//! What `/healthz` and `/readyz` answer: whether `pathcost serve` is
//! measuring, judged from three facts: the probes are attached, the ring
//! reader is still polling, and node detection keeps running (and
//! succeeding).
//!
//! The two endpoints differ on purpose. `/healthz` (liveness and start-up)
//! fails only where a restart can help: probes not attached, a reader loop
//! that stopped polling, a detection thread that stopped completing runs.
//! `/readyz` also fails while detection has not *succeeded* recently: a
//! node whose rules cannot be listed (a missing capability, version skew)
//! stays unready, visible in `kubectl get daemonset`, without the restart
//! loop a failing liveness check would cause. Both bodies list every check.

use std::{
    fmt::Write as _,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use super::node::NodeSlot;
use crate::probes::attach::SiteStatus;

/// The reader polls every few milliseconds ([`crate::collection`]); this
/// long without a poll means its task is stuck or starved.
pub const READER_STALE_AFTER: Duration = Duration::from_secs(30);

/// Detection older than this fails its check: three refresh periods, and
/// never less than three minutes (one slow `iptables-save` on a large node
/// must not flap the pod).
pub fn detection_max_age(refresh: Option<Duration>) -> Duration {
    refresh.map_or(Duration::ZERO, |r| r * 3).max(Duration::from_secs(180))
}

/// The facts one check is judged on, as ages at the moment of the check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthInputs {
    /// How long `serve` has been running.
    pub uptime: Duration,
    /// Attached sites (with a mechanism); `None` while still attaching.
    pub attached_sites: Option<usize>,
    pub since_reader_poll: Option<Duration>,
    /// Since the last detection run that completed, whatever its outcome.
    pub since_detection_run: Option<Duration>,
    pub since_detection_success: Option<Duration>,
    /// Detection runs once only (`--refresh 0`): its age does not matter.
    pub detection_once: bool,
    pub detection_max_age: Duration,
}

/// One line of a health answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// The checks behind an endpoint, in a fixed order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub checks: Vec<Check>,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// `ok` or `failing`, then one `name: ok|FAIL: detail` line per check.
    pub fn body(&self) -> String {
        let mut out = String::from(if self.ok() { "ok\n" } else { "failing\n" });
        for c in &self.checks {
            let _ = writeln!(out, "{}: {}: {}", c.name, if c.ok { "ok" } else { "FAIL" }, c.detail);
        }
        out
    }
}

fn ago(d: Duration) -> String {
    format!("{:.1} s ago", d.as_secs_f64())
}

impl HealthInputs {
    fn probes(&self) -> Check {
        let (ok, detail) = match self.attached_sites {
            None => (false, "still attaching (and calibrating)".to_owned()),
            Some(0) => (false, "no probe site attached".to_owned()),
            Some(n) => (true, format!("{n} site(s) attached")),
        };
        Check { name: "probes", ok, detail }
    }

    fn reader(&self) -> Check {
        let (ok, detail) = match (self.attached_sites, self.since_reader_poll) {
            // Nothing to read before the probes are attached.
            (None, _) => (false, "not started".to_owned()),
            (Some(_), None) => (false, "has not polled the ring buffer yet".to_owned()),
            (Some(_), Some(d)) if d > READER_STALE_AFTER => (false, format!("last polled {}: stuck", ago(d))),
            (Some(_), Some(d)) => (true, format!("polled {}", ago(d))),
        };
        Check { name: "ring reader", ok, detail }
    }

    /// Fresh enough: within the maximum age, or any age when detection
    /// runs only once.
    fn fresh(&self, age: Duration) -> bool {
        self.detection_once || age <= self.detection_max_age
    }

    /// Liveness half: the detection thread keeps completing runs.
    fn detection_runs(&self) -> Check {
        let (ok, detail) = match self.since_detection_run {
            // The first run may take a while on a large node.
            None if self.uptime <= self.detection_max_age => (true, "first run under way".to_owned()),
            None => (false, format!("no run completed in {:.0} s", self.uptime.as_secs_f64())),
            Some(d) if self.fresh(d) => (true, format!("last run {}", ago(d))),
            Some(d) => (false, format!("last run {}: the detection thread is stuck", ago(d))),
        };
        Check { name: "detection runs", ok, detail }
    }

    /// Readiness half: detection succeeded recently, so the node labels
    /// and service counts are current.
    fn detection_success(&self) -> Check {
        let (ok, detail) = match self.since_detection_success {
            None => (false, "no detection has succeeded yet (see the logs)".to_owned()),
            Some(d) if self.fresh(d) => (true, format!("succeeded {}", ago(d))),
            Some(d) => (false, format!("last success {}: node labels are stale (see the logs)", ago(d))),
        };
        Check { name: "detection", ok, detail }
    }

    /// `/healthz`: what a restart can fix.
    pub fn liveness(&self) -> Verdict {
        Verdict { checks: vec![self.probes(), self.reader(), self.detection_runs()] }
    }

    /// `/readyz`: everything, detection success included.
    pub fn readiness(&self) -> Verdict {
        Verdict { checks: vec![self.probes(), self.reader(), self.detection_runs(), self.detection_success()] }
    }
}

/// `u64::MAX`: never happened.
const NEVER: u64 = u64::MAX;

/// Health state shared by the reader loop, the detection refresher and the
/// HTTP server.
#[derive(Debug)]
pub struct Health {
    start: Instant,
    attached: AtomicBool,
    attached_sites: AtomicU64,
    /// Milliseconds after `start` of the reader's last poll.
    last_poll_ms: AtomicU64,
    node: Arc<NodeSlot>,
    detection_once: bool,
    detection_max_age: Duration,
}

impl Health {
    pub fn new(node: Arc<NodeSlot>, refresh: Option<Duration>) -> Health {
        Health {
            start: Instant::now(),
            attached: AtomicBool::new(false),
            attached_sites: AtomicU64::new(0),
            last_poll_ms: AtomicU64::new(NEVER),
            node,
            detection_once: refresh.is_none(),
            detection_max_age: detection_max_age(refresh),
        }
    }

    /// The probes are live.
    pub fn set_attached(&self, sites: &[SiteStatus]) {
        let n = sites.iter().filter(|s| s.mechanism.is_some()).count();
        self.attached_sites.store(n as u64, Ordering::Relaxed);
        self.attached.store(true, Ordering::Release);
    }

    /// The reader loop polled the ring buffer (with or without events).
    pub fn reader_polled(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(NEVER - 1);
        self.last_poll_ms.store(ms, Ordering::Relaxed);
    }

    /// The facts, as ages now.
    pub fn inputs(&self) -> HealthInputs {
        let now = Instant::now();
        let uptime = now.duration_since(self.start);
        let since = |t: Option<Instant>| t.map(|t| now.saturating_duration_since(t));
        let node = self.node.snapshot();
        let polled = self.last_poll_ms.load(Ordering::Relaxed);
        HealthInputs {
            uptime,
            attached_sites: self
                .attached
                .load(Ordering::Acquire)
                .then(|| self.attached_sites.load(Ordering::Relaxed) as usize),
            since_reader_poll: (polled != NEVER).then(|| uptime.saturating_sub(Duration::from_millis(polled))),
            since_detection_run: since(node.last_run),
            since_detection_success: since(node.last_success),
            detection_once: self.detection_once,
            detection_max_age: self.detection_max_age,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_AGE: Duration = Duration::from_secs(180);

    /// A healthy, ready `serve` a minute after start.
    fn healthy() -> HealthInputs {
        HealthInputs {
            uptime: Duration::from_secs(60),
            attached_sites: Some(5),
            since_reader_poll: Some(Duration::from_millis(100)),
            since_detection_run: Some(Duration::from_secs(10)),
            since_detection_success: Some(Duration::from_secs(10)),
            detection_once: false,
            detection_max_age: MAX_AGE,
        }
    }

    fn failing(v: &Verdict) -> Vec<&'static str> {
        v.checks.iter().filter(|c| !c.ok).map(|c| c.name).collect()
    }

    #[test]
    fn healthy_and_ready_when_attached_polling_and_detected() {
        let h = healthy();
        assert!(h.liveness().ok() && h.readiness().ok(), "{}", h.readiness().body());
        assert!(h.readiness().body().starts_with("ok\nprobes: ok: 5 site(s) attached\n"), "{}", h.readiness().body());
    }

    #[test]
    fn while_attaching_neither_healthy_nor_ready() {
        let h = HealthInputs { attached_sites: None, since_reader_poll: None, ..healthy() };
        assert_eq!(failing(&h.liveness()), ["probes", "ring reader"]);
        assert!(h.liveness().body().starts_with("failing\n"));
        let none = HealthInputs { attached_sites: Some(0), ..healthy() };
        assert_eq!(failing(&none.liveness()), ["probes"]);
    }

    #[test]
    fn a_reader_that_stopped_polling_fails_liveness() {
        let h = HealthInputs { since_reader_poll: Some(READER_STALE_AFTER + Duration::from_secs(1)), ..healthy() };
        assert_eq!(failing(&h.liveness()), ["ring reader"]);
        let never = HealthInputs { since_reader_poll: None, ..healthy() };
        assert_eq!(failing(&never.liveness()), ["ring reader"]);
    }

    #[test]
    fn failing_detection_makes_unready_but_not_unhealthy() {
        // Runs complete (and fail): a restart would not help.
        let h = HealthInputs { since_detection_success: None, ..healthy() };
        assert!(h.liveness().ok());
        assert_eq!(failing(&h.readiness()), ["detection"]);
        let stale = HealthInputs { since_detection_success: Some(MAX_AGE + Duration::from_secs(1)), ..healthy() };
        assert!(stale.liveness().ok());
        assert_eq!(failing(&stale.readiness()), ["detection"]);
    }

    #[test]
    fn a_stuck_detection_thread_fails_liveness_after_the_maximum_age() {
        let first_run = HealthInputs { since_detection_run: None, since_detection_success: None, ..healthy() };
        assert!(first_run.liveness().ok(), "the first run may take a while");
        let never = HealthInputs { uptime: MAX_AGE + Duration::from_secs(1), ..first_run };
        assert_eq!(failing(&never.liveness()), ["detection runs"]);
        let stuck = HealthInputs { since_detection_run: Some(MAX_AGE * 2), since_detection_success: Some(MAX_AGE * 2), ..healthy() };
        assert_eq!(failing(&stuck.readiness()), ["detection runs", "detection"]);
    }

    #[test]
    fn a_single_detection_never_goes_stale() {
        let once = HealthInputs {
            detection_once: true,
            since_detection_run: Some(MAX_AGE * 10),
            since_detection_success: Some(MAX_AGE * 10),
            ..healthy()
        };
        assert!(once.readiness().ok(), "{}", once.readiness().body());
    }

    #[test]
    fn the_maximum_age_follows_refresh_with_a_floor() {
        assert_eq!(detection_max_age(Some(Duration::from_secs(60))), Duration::from_secs(180));
        assert_eq!(detection_max_age(Some(Duration::from_secs(300))), Duration::from_secs(900));
        assert_eq!(detection_max_age(None), Duration::from_secs(180));
    }

    #[test]
    fn live_state_reads_back_as_inputs() {
        let slot = Arc::new(NodeSlot::default());
        let health = Health::new(Arc::clone(&slot), Some(Duration::from_secs(60)));
        let before = health.inputs();
        assert_eq!((before.attached_sites, before.since_reader_poll, before.since_detection_run), (None, None, None));
        health.set_attached(&[]);
        health.reader_polled();
        slot.update(Err(anyhow::anyhow!("iptables-legacy-save: Permission denied")));
        let after = health.inputs();
        assert_eq!(after.attached_sites, Some(0));
        assert!(after.since_reader_poll.is_some_and(|d| d < Duration::from_secs(5)));
        assert!(after.since_detection_run.is_some(), "a failed run still ran");
        assert!(after.since_detection_success.is_none());
        assert_eq!(failing(&after.readiness()), ["probes", "detection"]);
    }
}
