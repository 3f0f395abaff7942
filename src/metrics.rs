//! Prometheus metrics (`GET /metrics` on the admin listener), on the `prometheus-client` crate
//! (OpenMetrics text, `application/openmetrics-text; version=1.0.0`).
//!
//! No global state: each part owns the metrics it moves and [`Metrics`] (a field of `App`)
//! holds the [`Registry`] over them. The store owns its commit histogram, the renderer its
//! [`RenderMetrics`], the sync dispatcher its [`NotifyMetrics`], and `Metrics` the phone
//! counters; the crate's metrics are `Arc`s over atomics, so the registry holds clones of the
//! same cells. On the phone path a count is a read-locked hash lookup (the lock guards only the
//! map of label sets, never I/O; a new label set takes the write lock once) and one atomic add.
//! Gauges (the change-log seq, devices per sync state) are set from the store at scrape time.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::fmt::Write as _;
use std::time::Duration;

/// The content type of the exposition text.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the latency histograms, in seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A latency histogram with the buckets above.
pub(crate) fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// A closed set of label values, written as their snake_case names.
macro_rules! label_values {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub(crate) enum $name { $($variant),+ }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                encoder.write_str(match self { $($name::$variant => $text),+ })
            }
        }
    };
}

label_values!(
    /// Why a phone authentication failed.
    AuthReason { Credentials => "credentials", Network => "network", UnknownDevice => "unknown_device" }
);
label_values!(
    /// What a lockout covers: the whole address, or one MAC from one address.
    LockoutScope { Address => "address", Pair => "pair" }
);
label_values!(
    /// A render served from the cache or rendered.
    CacheResult { Hit => "hit", Miss => "miss" }
);
label_values!(
    /// Whether a NOTIFY was answered.
    NotifyResult { Ok => "ok", Failed => "failed" }
);
label_values!(
    /// A device's sync state.
    SyncState { InSync => "in_sync", Pending => "pending", Notified => "notified", Failed => "failed" }
);

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PhoneRequestLabels {
    status: u16,
    model: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AuthFailureLabels {
    reason: AuthReason,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LockoutLabels {
    scope: LockoutScope,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CacheLabels {
    result: CacheResult,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NotifyLabels {
    result: NotifyResult,
    event: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DeviceLabels {
    sync: SyncState,
}

/// The store's metrics: durable commit latency, and how long phones' answers wait for their
/// newly applied revision to be durable.
#[derive(Clone)]
pub(crate) struct StoreMetrics {
    pub(crate) commit_seconds: Histogram,
    pub(crate) checkin_seconds: Histogram,
}

impl Default for StoreMetrics {
    fn default() -> StoreMetrics {
        StoreMetrics {
            commit_seconds: latency_histogram(),
            checkin_seconds: latency_histogram(),
        }
    }
}

/// The renderer's metrics: render latency (cache misses) and cache hits and misses.
#[derive(Clone)]
pub(crate) struct RenderMetrics {
    seconds: Histogram,
    cache: Family<CacheLabels, Counter>,
    ahead_pending: Gauge,
}

impl Default for RenderMetrics {
    fn default() -> RenderMetrics {
        RenderMetrics {
            seconds: latency_histogram(),
            cache: Family::default(),
            ahead_pending: Gauge::default(),
        }
    }
}

impl RenderMetrics {
    /// A render (a cache miss) took `d`.
    pub(crate) fn latency(&self, d: Duration) {
        self.seconds.observe(d.as_secs_f64());
    }

    /// A render served from the cache (`hit`) or rendered (`miss`).
    pub(crate) fn cache(&self, hit: bool) {
        let result = if hit {
            CacheResult::Hit
        } else {
            CacheResult::Miss
        };
        self.cache.get_or_create(&CacheLabels { result }).inc();
    }

    /// (hits, misses) counted so far.
    #[cfg(test)]
    pub(crate) fn cache_counts(&self) -> (u64, u64) {
        let n = |result| self.cache.get_or_create(&CacheLabels { result }).get();
        (n(CacheResult::Hit), n(CacheResult::Miss))
    }

    /// Devices whose files are still to be rendered ahead (0 once done, or when not enabled).
    pub(crate) fn ahead_pending(&self, devices: usize) {
        self.ahead_pending
            .set(i64::try_from(devices).unwrap_or(i64::MAX));
    }
}

/// The sync dispatcher's metrics: NOTIFYs sent by result and event.
#[derive(Clone, Default)]
pub(crate) struct NotifyMetrics {
    sent: Family<NotifyLabels, Counter>,
}

impl NotifyMetrics {
    /// A NOTIFY was sent: answered (`ok`) or not (`failed`), with its `Event:`.
    pub(crate) fn sent(&self, ok: bool, event: &str) {
        let result = if ok {
            NotifyResult::Ok
        } else {
            NotifyResult::Failed
        };
        self.sent
            .get_or_create(&NotifyLabels {
                result,
                event: event.to_string(),
            })
            .inc();
    }
}

/// The registry and the metrics no other part owns (phone counters, scrape-time gauges).
pub(crate) struct Metrics {
    registry: Registry,
    phone_requests: Family<PhoneRequestLabels, Counter>,
    auth_failures: Family<AuthFailureLabels, Counter>,
    lockouts: Family<LockoutLabels, Counter>,
    firmware_busy: Counter,
    devices: Family<DeviceLabels, Gauge>,
    change_seq: Gauge,
}

impl Metrics {
    /// The registry over the phone counters and the parts' metrics: the store's histograms,
    /// the renderer's and the dispatcher's.
    pub(crate) fn new(
        store: &StoreMetrics,
        render: &RenderMetrics,
        notify: &NotifyMetrics,
    ) -> Metrics {
        let m = Metrics {
            registry: Registry::default(),
            phone_requests: Family::default(),
            auth_failures: Family::default(),
            lockouts: Family::default(),
            firmware_busy: Counter::default(),
            devices: Family::default(),
            change_seq: Gauge::default(),
        };
        let mut r = m.registry;
        // Counters are registered without `_total`: the encoder appends it.
        r.register(
            "deskprov_phone_requests",
            "Phone requests by response status and device model.",
            m.phone_requests.clone(),
        );
        r.register(
            "deskprov_phone_auth_failures",
            "Failed phone authentications by reason.",
            m.auth_failures.clone(),
        );
        r.register(
            "deskprov_phone_lockouts",
            "Lockouts begun, by scope (address, or one MAC from an address).",
            m.lockouts.clone(),
        );
        r.register(
            "deskprov_firmware_downloads_refused",
            "Firmware downloads answered 503: [firmware] max_downloads were running.",
            m.firmware_busy.clone(),
        );
        r.register(
            "deskprov_render_cache",
            "Phone file renders served from the cache (hit) or rendered (miss).",
            render.cache.clone(),
        );
        r.register_with_unit(
            "deskprov_render",
            "Time to render a file on a cache miss.",
            Unit::Seconds,
            render.seconds.clone(),
        );
        r.register(
            "deskprov_render_ahead_pending",
            "Devices whose files the server is still rendering ahead of their fetch since start-up (0 once done).",
            render.ahead_pending.clone(),
        );
        r.register(
            "deskprov_notify",
            "SIP NOTIFYs sent, by result and event.",
            notify.sent.clone(),
        );
        r.register_with_unit(
            "deskprov_store_commit",
            "Time of a durable store commit.",
            Unit::Seconds,
            store.commit_seconds.clone(),
        );
        r.register_with_unit(
            "deskprov_phone_checkin_wait",
            "Time a phone's answer waited for the revision it applied to be durable (its first fetch of a new revision).",
            Unit::Seconds,
            store.checkin_seconds.clone(),
        );
        r.register(
            "deskprov_devices",
            "Devices by sync state.",
            m.devices.clone(),
        );
        r.register(
            "deskprov_change_seq",
            "The last committed change-log seq.",
            m.change_seq.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// A phone request answered with `status` (`model`: the device's model id, `-` when unknown).
    pub(crate) fn phone_request(&self, status: u16, model: &str) {
        self.phone_requests
            .get_or_create(&PhoneRequestLabels {
                status,
                model: model.to_string(),
            })
            .inc();
    }

    /// A failed phone authentication.
    pub(crate) fn auth_failure(&self, reason: AuthReason) {
        self.auth_failures
            .get_or_create(&AuthFailureLabels { reason })
            .inc();
    }

    /// A firmware download refused: the cap of concurrent downloads was reached.
    pub(crate) fn firmware_busy(&self) {
        self.firmware_busy.inc();
    }

    /// A lockout began.
    pub(crate) fn lockout(&self, scope: LockoutScope) {
        self.lockouts.get_or_create(&LockoutLabels { scope }).inc();
    }

    /// Sets the gauges from the sync-state counts and the last seq, then writes the text.
    fn encode(&self, counts: &crate::sync::Counts, seq: u64) -> String {
        for (sync, n) in [
            (SyncState::InSync, counts.in_sync),
            (SyncState::Pending, counts.pending),
            (SyncState::Notified, counts.notified),
            (SyncState::Failed, counts.failed),
        ] {
            self.devices
                .get_or_create(&DeviceLabels { sync })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.change_seq.set(i64::try_from(seq).unwrap_or(i64::MAX));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The exposition text: the counters, and the gauges computed from `app` now.
pub(crate) fn render(app: &crate::App) -> String {
    let state = app.store.read();
    let counts = app.sync.counts(state.devices.values().map(|d| {
        let applied = app
            .store
            .checkin(&d.mac)
            .map(|c| c.applied_revision)
            .unwrap_or(0);
        (d, applied)
    }));
    app.metrics.encode(&counts, app.store.last_seq())
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
        .unwrap_or_else(new_request_id)
}

/// A new request id: 16 hex digits, distinct for every request of this process (a counter
/// from a random start, mixed so consecutive ids do not look alike) without a system call per
/// request. Ids only correlate log lines; they are not secrets.
fn new_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static START: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let start = *START.get_or_init(|| {
        u64::from_str_radix(&crate::secrets::hex_token::<8>(), 16).unwrap_or(0x9e37_79b9)
    });
    // splitmix64's finaliser: a bijection, so distinct counters give distinct ids.
    let mut z = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    format!("{:016x}", z ^ (z >> 31))
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
    fn generated_request_ids_are_distinct_hex() {
        let ids: std::collections::HashSet<String> =
            (0..10_000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids
            .iter()
            .all(|i| i.len() == 16 && i.bytes().all(|b| b.is_ascii_hexdigit())));
    }

    #[test]
    fn the_registry_writes_the_documented_names_and_labels() {
        let store = StoreMetrics::default();
        let render = RenderMetrics::default();
        let notify = NotifyMetrics::default();
        let m = Metrics::new(&store, &render, &notify);
        m.phone_request(200, "yealink-t54w");
        m.phone_request(200, "yealink-t54w");
        m.phone_request(401, "-");
        m.auth_failure(AuthReason::UnknownDevice);
        m.lockout(LockoutScope::Pair);
        render.cache(false);
        render.latency(Duration::from_micros(300));
        render.latency(Duration::from_secs(5));
        notify.sent(true, "check-sync");
        store.commit_seconds.observe(0.002);
        store.checkin_seconds.observe(0.0003);
        let counts = crate::sync::Counts {
            in_sync: 3,
            ..Default::default()
        };
        let out = m.encode(&counts, 42);
        for line in [
            "# TYPE deskprov_phone_requests counter\n",
            "deskprov_phone_requests_total{status=\"200\",model=\"yealink-t54w\"} 2\n",
            "deskprov_phone_requests_total{status=\"401\",model=\"-\"} 1\n",
            "deskprov_phone_auth_failures_total{reason=\"unknown_device\"} 1\n",
            "deskprov_phone_lockouts_total{scope=\"pair\"} 1\n",
            "deskprov_render_cache_total{result=\"miss\"} 1\n",
            "# TYPE deskprov_render_seconds histogram\n",
            "deskprov_render_seconds_bucket{le=\"0.0005\"} 1\n",
            "deskprov_render_seconds_bucket{le=\"1.0\"} 1\n",
            "deskprov_render_seconds_bucket{le=\"+Inf\"} 2\n",
            "deskprov_render_seconds_count 2\n",
            "deskprov_notify_total{result=\"ok\",event=\"check-sync\"} 1\n",
            "deskprov_store_commit_seconds_count 1\n",
            "deskprov_phone_checkin_wait_seconds_bucket{le=\"0.00025\"} 0\n",
            "deskprov_phone_checkin_wait_seconds_bucket{le=\"0.0005\"} 1\n",
            "deskprov_phone_checkin_wait_seconds_count 1\n",
            "deskprov_devices{sync=\"in_sync\"} 3\n",
            "deskprov_devices{sync=\"failed\"} 0\n",
            "deskprov_change_seq 42\n",
        ] {
            assert!(out.contains(line), "{line:?} missing from\n{out}");
        }
        assert!(out.ends_with("# EOF\n"), "{out}");
    }
}
