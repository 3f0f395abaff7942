//! Prometheus metrics (`GET /metrics` on the admin listener, text exposition format 0.0.4).
//!
//! Written by hand over atomics: no exporter crate is in this build's offline registry (the
//! suggested `prometheus-client` could not be fetched), and the format is small. Counters on
//! the phone path are one atomic add after a read-locked map lookup (the lock guards only the
//! map of label sets, never I/O; a new label set takes the write lock once). Gauges (the
//! change-log seq, devices per sync state) are computed at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::Duration;

/// A counter family with labels.
struct Family {
    labels: &'static [&'static str],
    values: RwLock<BTreeMap<Vec<String>, Arc<AtomicU64>>>,
}

impl Family {
    const fn new(labels: &'static [&'static str]) -> Family {
        Family {
            labels,
            values: RwLock::new(BTreeMap::new()),
        }
    }

    fn inc(&self, values: &[&str]) {
        {
            let map = self.values.read().unwrap_or_else(|p| p.into_inner());
            // A lookup by borrowed strings would need a custom key; label sets are short.
            let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
            if let Some(c) = map.get(&key) {
                c.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        self.values
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        let map = self.values.read().unwrap_or_else(|p| p.into_inner());
        for (vals, c) in map.iter() {
            let labels: Vec<String> = self
                .labels
                .iter()
                .zip(vals)
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = writeln!(
                out,
                "{name}{{{}}} {}",
                labels.join(","),
                c.load(Ordering::Relaxed)
            );
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Upper bounds of the latency histograms, in seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A latency histogram: one atomic per bucket, the sum in microseconds.
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BUCKETS.len()],
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| s <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

struct Metrics {
    phone_requests: Family,
    auth_failures: Family,
    lockouts: Family,
    notifies: Family,
    render_cache: Family,
    render_seconds: Histogram,
    commit_seconds: Histogram,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    phone_requests: Family::new(&["status", "model"]),
    auth_failures: Family::new(&["reason"]),
    lockouts: Family::new(&["scope"]),
    notifies: Family::new(&["result", "event"]),
    render_cache: Family::new(&["result"]),
    render_seconds: Histogram::new(),
    commit_seconds: Histogram::new(),
});

/// A phone request answered with `status` (`model`: the device's model id, `-` when unknown).
pub(crate) fn phone_request(status: u16, model: &str) {
    METRICS.phone_requests.inc(&[itoa(status).as_str(), model]);
}

fn itoa(n: u16) -> String {
    n.to_string()
}

/// A failed phone authentication: `network`, `credentials` or `unknown_device`.
pub(crate) fn auth_failure(reason: &'static str) {
    METRICS.auth_failures.inc(&[reason]);
}

/// A lockout began: `address` (the whole address) or `pair` (one MAC from one address).
pub(crate) fn lockout(scope: &'static str) {
    METRICS.lockouts.inc(&[scope]);
}

/// A NOTIFY was sent: `ok` or `failed`, with its `Event:`.
pub(crate) fn notify(ok: bool, event: &str) {
    METRICS
        .notifies
        .inc(&[if ok { "ok" } else { "failed" }, event]);
}

/// A render served from the cache (`hit`) or rendered (`miss`).
pub(crate) fn render_cache(hit: bool) {
    METRICS
        .render_cache
        .inc(&[if hit { "hit" } else { "miss" }]);
}

/// A render (a cache miss) took `d`.
pub(crate) fn render_latency(d: Duration) {
    METRICS.render_seconds.observe(d);
}

/// A store commit (the durable write) took `d`.
pub(crate) fn commit_latency(d: Duration) {
    METRICS.commit_seconds.observe(d);
}

/// The exposition text: the counters, and the gauges computed from `app` now.
pub(crate) fn render(app: &crate::App) -> String {
    let m = &*METRICS;
    let mut out = String::new();
    m.phone_requests.write(
        &mut out,
        "deskprov_phone_requests_total",
        "Phone requests by response status and device model.",
    );
    m.auth_failures.write(
        &mut out,
        "deskprov_phone_auth_failures_total",
        "Failed phone authentications by reason.",
    );
    m.lockouts.write(
        &mut out,
        "deskprov_phone_lockouts_total",
        "Lockouts begun, by scope (address, or one MAC from an address).",
    );
    m.render_cache.write(
        &mut out,
        "deskprov_render_cache_total",
        "Phone file renders served from the cache (hit) or rendered (miss).",
    );
    m.render_seconds.write(
        &mut out,
        "deskprov_render_seconds",
        "Time to render a file on a cache miss.",
    );
    m.notifies.write(
        &mut out,
        "deskprov_notify_total",
        "SIP NOTIFYs sent, by result and event.",
    );
    m.commit_seconds.write(
        &mut out,
        "deskprov_store_commit_seconds",
        "Time of a durable store commit.",
    );
    let state = app.store.read();
    let counts = app.sync.counts(state.devices.values().map(|d| {
        let applied = app
            .store
            .checkin(&d.mac)
            .map(|c| c.applied_revision)
            .unwrap_or(0);
        (d, applied)
    }));
    let c = serde_json::to_value(&counts).unwrap_or_default();
    let _ = writeln!(
        out,
        "# HELP deskprov_devices Devices by sync state.\n# TYPE deskprov_devices gauge"
    );
    if let Some(obj) = c.as_object() {
        for (k, v) in obj {
            let _ = writeln!(out, "deskprov_devices{{sync=\"{k}\"}} {v}");
        }
    }
    let _ = writeln!(
        out,
        "# HELP deskprov_change_seq The last committed change-log seq.\n# TYPE deskprov_change_seq gauge\ndeskprov_change_seq {}",
        app.store.last_seq()
    );
    out
}

/// The request id of a request: the client's `x-request-id` when it is a short token
/// (letters, digits, `-_.:`, at most 64), else a new random one. Answered in `x-request-id`
/// and carried by the request's log lines.
pub(crate) fn request_id(headers: &axum::http::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        })
        .map(str::to_string)
        .unwrap_or_else(crate::secrets::hex_token::<8>)
}

/// Sets `x-request-id` on a response.
pub(crate) fn set_request_id(r: &mut axum::response::Response, id: &str) {
    if let Ok(v) = axum::http::HeaderValue::from_str(id) {
        r.headers_mut().insert("x-request-id", v);
    }
}

/// Admin API middleware: the request id (in a span around the handler and in the answer) and
/// one line per request with method, route, status and latency.
pub(crate) async fn admin_requests(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument as _;
    let id = request_id(req.headers());
    let method = req.method().clone();
    // The path only: a query string may carry nothing secret today, but it is not logged.
    let path: String = req.uri().path().chars().take(256).collect();
    let started = std::time::Instant::now();
    let span = tracing::info_span!("admin", request_id = %id);
    let mut r = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            target: "deskprov::admin::request",
            method = %method,
            path = %path,
            status = r.status().as_u16(),
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "admin request"
        )
    });
    set_request_id(&mut r, &id);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_write_the_text_format() {
        let f = Family::new(&["status", "model"]);
        f.inc(&["200", "yealink-t54w"]);
        f.inc(&["200", "yealink-t54w"]);
        f.inc(&["401", "a\"b"]);
        let mut out = String::new();
        f.write(&mut out, "x_total", "help");
        assert!(out.contains("# TYPE x_total counter\n"));
        assert!(out.contains("x_total{status=\"200\",model=\"yealink-t54w\"} 2\n"));
        assert!(out.contains("x_total{status=\"401\",model=\"a\\\"b\"} 1\n"));
        let h = Histogram::new();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_secs(5));
        let mut out = String::new();
        h.write(&mut out, "lat", "help");
        assert!(out.contains("lat_bucket{le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("lat_bucket{le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("lat_bucket{le=\"+Inf\"} 2\n"), "{out}");
        assert!(out.contains("lat_count 2\n"));
    }
}
