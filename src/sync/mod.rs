//! Changes reach the phones (SPEC §3): the change log drives debounced, paced SIP NOTIFYs, and
//! the phone's next fetch of its main file confirms them.
//!
//! The [`Dispatcher`] follows the change log from a persisted cursor. Every touched device gets
//! a [`SyncState`]: the revision it must fetch, whether a reboot is needed, and when its next
//! step is due. A burst of changes to one device within `debounce_ms` gives one NOTIFY. When
//! due, the device is skipped if it already has the revision, or (same-hash) if its main file
//! renders to the bytes it last fetched; else the model's re-sync or reboot event is sent, at
//! most `notify_rate` per second fleet-wide. A 2xx makes it `notified`; no fetch within
//! `ack_timeout_s` → resent with backoff, up to `max_attempts`, then `failed`. States and cursor
//! are saved together, so a restart resumes the pending work (and re-reads any changes not yet
//! taken in) without sending twice for one revision.
//!
//! With a store shared by several servers one of them dispatches (it holds the database's
//! lock for it): a manual sync requested on any server is queued in the database and taken in
//! by the dispatcher with the state it leads to, in one transaction; the other servers show
//! the states the dispatcher saves, followed from the database ([`Dispatcher::followed`]).

pub(crate) mod pacing;
pub(crate) mod sip;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{watch, Notify};

use crate::domain::{ChangeKind, Device, Mac};
use crate::store::{FollowedState, LastNotify, StoreError, SyncPhase, SyncRequest, SyncState};
use crate::SharedApp;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Whether a change of `kind` needs the model's reboot event rather than its re-sync event:
/// when the model's `reboot_on` names it, and for `unregister` on every model.
fn needs_reboot(model: Option<&crate::catalog::Model>, kind: ChangeKind) -> bool {
    model.is_some_and(|m| kind.forces_reboot() || m.notify.reboot_on.contains(&kind))
}

/// Takes change `seq` into a device's state: pending again, due at `due`. A new revision
/// restarts the cycle; reboot needs accumulate until sent.
fn take_in(st: &mut SyncState, seq: u64, reboot: bool, due: u64) {
    if st.phase != SyncPhase::Pending {
        st.reboot = false;
        st.force = false;
    }
    st.phase = SyncPhase::Pending;
    st.revision = st.revision.max(seq);
    st.reboot |= reboot;
    st.due_ms = due;
    st.attempts = 0;
}

/// The state a manual sync leaves a device in: pending now at `revision`, forced (no
/// debounce, no same-hash skip), attempts start over; the last NOTIFY stays shown.
fn requested(prev: Option<&SyncState>, revision: u64, reboot: bool, now: u64) -> SyncState {
    SyncState {
        phase: SyncPhase::Pending,
        revision,
        reboot,
        due_ms: now,
        attempts: 0,
        force: true,
        last_notify: prev.and_then(|s| s.last_notify.clone()),
    }
}

/// Queued manual syncs (oldest first) on top of `states`: the last request for a device wins,
/// as when two requests come before the NOTIFY on one server; the revision is the newer of
/// the requester's and `revision_of` (this server's view of the device).
fn apply_requests(
    states: &HashMap<Mac, SyncState>,
    requests: Vec<SyncRequest>,
    revision_of: impl Fn(&Mac) -> u64,
    now: u64,
) -> Vec<(Mac, SyncState)> {
    let mut out: Vec<(Mac, SyncState)> = Vec::new();
    for r in requests {
        let revision = r.revision.max(revision_of(&r.mac));
        let prev = out
            .iter()
            .rev()
            .find(|(m, _)| *m == r.mac)
            .map(|(_, s)| s)
            .or_else(|| states.get(&r.mac));
        let st = requested(prev, revision, r.reboot, now);
        out.retain(|(m, _)| *m != r.mac);
        out.push((r.mac, st));
    }
    out
}

/// Sync states followed from the database into a server that does not dispatch: each row
/// replaces the device's state, unless it is older than the row last taken for that device
/// (the look-back reads recent rows again).
fn merge_followed(
    states: &mut HashMap<Mac, SyncState>,
    seen: &mut HashMap<Mac, u64>,
    rows: Vec<FollowedState>,
) {
    for (mac, ord, st) in rows {
        if seen.get(&mac).is_some_and(|o| *o >= ord) {
            continue;
        }
        seen.insert(mac.clone(), ord);
        states.insert(mac, st);
    }
}

/// Counts of devices per sync state.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Counts {
    pub(crate) in_sync: usize,
    pub(crate) pending: usize,
    pub(crate) notified: usize,
    pub(crate) failed: usize,
}

/// Spaces sends `1/rate` apart (no burst); rate 0 = no pacing.
struct Pacer {
    rate: u32,
    next: Mutex<tokio::time::Instant>,
}

impl Pacer {
    async fn wait(&self) {
        if self.rate == 0 {
            return;
        }
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let now = tokio::time::Instant::now();
            let slot = (*next).max(now);
            *next = slot + Duration::from_secs_f64(1.0 / self.rate as f64);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// The sync dispatcher's shared state (the loop itself is [`run`]).
pub(crate) struct Dispatcher {
    client: sip::Client,
    states: Mutex<HashMap<Mac, SyncState>>,
    /// Devices with a NOTIFY transaction in flight (not picked again until it ends).
    in_flight: Mutex<std::collections::HashSet<Mac>>,
    wake: Notify,
    pacer: Pacer,
    /// Caps NOTIFY transactions in flight: past a few hundred, responses queue up beyond T1
    /// and UDP retransmissions feed a storm instead of throughput.
    window: Arc<tokio::sync::Semaphore>,
    /// NOTIFYs sent (registered by `App`'s metrics).
    pub(crate) metrics: crate::metrics::NotifyMetrics,
    /// The phone listener's request latencies (recorded by every phone request).
    pub(crate) latency: pacing::FetchLatency,
    /// With `pacing = "adaptive"`: the window of re-syncs in flight.
    adaptive: Option<Adaptive>,
    /// With a shared store: this server has the dispatcher's turn (changed under the lock of
    /// `states`). Otherwise `states` follows what the dispatcher saves.
    leading: AtomicBool,
    /// With a shared store, not dispatching: the order of the last followed state per device.
    followed: Mutex<HashMap<Mac, u64>>,
    /// With a shared store, dispatching: something was announced, manual syncs may be queued.
    requests_hint: AtomicBool,
}

/// Adaptive pacing's state: the window, and the re-syncs in it.
struct Adaptive {
    window: Mutex<pacing::Window>,
    /// The window's current size (read by the sender without the window's lock).
    limit: AtomicUsize,
    /// Devices notified (or being notified) that have not fetched the revision yet: revision
    /// and when the place was taken.
    awaiting: Mutex<HashMap<Mac, (u64, Instant)>>,
    /// Places were given back.
    freed: Notify,
}

/// How often a server sharing its store asks for the dispatcher's turn (and, holding it,
/// checks it still does).
const LEAD_RETRY: Duration = Duration::from_secs(1);

/// Most NOTIFY transactions in flight at once.
const WINDOW: usize = 256;

impl Dispatcher {
    /// Binds the SIP socket and loads the persisted states.
    pub(crate) async fn new(
        config: &crate::config::Sync,
        store: &crate::store::Store,
    ) -> std::io::Result<Dispatcher> {
        let client = sip::Client::bind(&config.sip_bind).await?;
        let states = store
            .sync_load()
            .map_err(|e| std::io::Error::other(e.to_string()))?
            .1
            .into_iter()
            .collect();
        Ok(Dispatcher {
            client,
            states: Mutex::new(states),
            in_flight: Default::default(),
            wake: Notify::new(),
            pacer: Pacer {
                rate: config.notify_rate,
                next: Mutex::new(tokio::time::Instant::now()),
            },
            window: Arc::new(tokio::sync::Semaphore::new(WINDOW)),
            metrics: Default::default(),
            latency: Default::default(),
            adaptive: (config.pacing == crate::config::Pacing::Adaptive).then(|| {
                let w = pacing::Window::new(Duration::from_millis(config.fetch_p99_ms));
                Adaptive {
                    limit: AtomicUsize::new(w.limit()),
                    window: Mutex::new(w),
                    awaiting: Mutex::new(HashMap::new()),
                    freed: Notify::new(),
                }
            }),
            leading: AtomicBool::new(false),
            followed: Mutex::new(HashMap::new()),
            requests_hint: AtomicBool::new(false),
        })
    }

    /// The device's sync state for the API: `in_sync` once it has fetched its revision.
    pub(crate) fn state_of(&self, d: &Device, applied: u64) -> (SyncPhase, Option<LastNotify>) {
        let st = self
            .states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&d.mac)
            .cloned();
        let last = st.as_ref().and_then(|s| s.last_notify.as_deref().cloned());
        let phase = match st {
            _ if applied >= d.revision => SyncPhase::InSync,
            Some(s) => s.phase,
            None => SyncPhase::Pending,
        };
        (phase, last)
    }

    /// Counts per state over `devices` (with their applied revisions).
    pub(crate) fn counts<'a>(&self, devices: impl Iterator<Item = (&'a Device, u64)>) -> Counts {
        let mut c = Counts::default();
        for (d, applied) in devices {
            match self.state_of(d, applied).0 {
                SyncPhase::InSync => c.in_sync += 1,
                SyncPhase::Pending => c.pending += 1,
                SyncPhase::Notified => c.notified += 1,
                SyncPhase::Failed => c.failed += 1,
            }
        }
        c
    }

    /// Manual syncs: NOTIFY now (no debounce, no same-hash skip), attempts start over. With a
    /// shared store the requests are queued in the database (committed before this returns)
    /// for the dispatcher, on whichever server it runs.
    /// `devices`: (MAC, revision) of each device to sync.
    pub(crate) fn request(
        &self,
        app: &SharedApp,
        devices: &[(Mac, u64)],
        reboot: bool,
    ) -> Result<(), StoreError> {
        if app.store.shared() {
            let requests: Vec<SyncRequest> = devices
                .iter()
                .map(|(mac, revision)| SyncRequest {
                    mac: mac.clone(),
                    revision: *revision,
                    reboot,
                })
                .collect();
            app.store.request_sync(&requests)?;
            if self.leading.load(Ordering::Acquire) {
                self.take_requests(app);
            } else {
                // Shown here until the state the dispatcher saves for it is followed.
                let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
                if !self.leading.load(Ordering::Acquire) {
                    for (mac, revision) in devices {
                        let st = requested(states.get(mac), *revision, reboot, now_ms());
                        states.insert(mac.clone(), st);
                    }
                }
            }
            return Ok(());
        }
        for (mac, revision) in devices {
            let st = {
                let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
                let st = requested(states.get(mac), *revision, reboot, now_ms());
                states.insert(mac.clone(), st.clone());
                st
            };
            save(app, mac, Some(st));
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Dispatching on a shared store: takes the manual syncs queued by every server into the
    /// states (saved in the transaction that takes them), and wakes the loop if any came.
    fn take_requests(&self, app: &SharedApp) {
        // A cheap look first: the states stay locked across the taking transaction only when
        // there is something to take.
        match app.store.sync_requests_queued() {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(error = %e, "looking for requested manual syncs failed");
                return;
            }
        }
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let snapshot = app.store.read();
        let taken = app.store.take_sync_requests(&mut |requests| {
            apply_requests(
                &states,
                requests,
                |m| snapshot.devices.get(m).map_or(0, |d| d.revision),
                now_ms(),
            )
        });
        match taken {
            Ok(taken) if taken.is_empty() => {}
            Ok(taken) => {
                for (mac, st) in taken {
                    tracing::info!(mac = %mac, reboot = st.reboot, "manual sync taken in");
                    states.insert(mac, st);
                }
                drop(states);
                self.wake.notify_one();
            }
            Err(e) => tracing::warn!(error = %e, "taking in the requested manual syncs failed"),
        }
    }

    /// With a shared store: whether this server has the dispatcher's turn.
    pub(crate) fn leading(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }

    /// With a shared store, after every follow: a server that does not dispatch takes the sync
    /// states the dispatcher saved; the dispatching one looks for queued manual syncs.
    pub(crate) fn followed(&self, rows: Vec<FollowedState>) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        if self.leading.load(Ordering::Acquire) {
            drop(states);
            self.requests_hint.store(true, Ordering::Release);
            self.wake.notify_one();
            return;
        }
        let mut seen = self.followed.lock().unwrap_or_else(|p| p.into_inner());
        merge_followed(&mut states, &mut seen, rows);
    }
}

/// Saves one device's state in the background (the store's observation writer).
fn save(app: &SharedApp, mac: &Mac, st: Option<SyncState>) {
    app.store.sync_save(None, vec![(mac.clone(), st)]);
}

/// Takes in change-log entries after the cursor: every touched device becomes pending, due
/// after the debounce window (a burst extends it).
fn ingest(app: &SharedApp, cursor: &mut u64) {
    let d = &app.sync;
    let debounce = app.config.sync.debounce_ms;
    loop {
        // The state first: the changes read are those it already includes.
        let state = app.store.read();
        let changes = match app.store.changes_upto(*cursor, 1000, None, state.seq()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "reading the change log failed");
                return;
            }
        };
        let Some(last) = changes.last().map(|c| c.seq) else {
            return;
        };
        let mut touched = Vec::new();
        {
            let mut states = d.states.lock().unwrap_or_else(|p| p.into_inner());
            for c in &changes {
                for mac in &c.devices {
                    let Some(dev) = state.devices.get(mac) else {
                        if states.remove(mac).is_some() {
                            touched.push((mac.clone(), None));
                        }
                        continue;
                    };
                    let reboot =
                        needs_reboot(app.renderer.catalog().get(&dev.model), c.kind_for(mac));
                    let due = now_ms() + debounce;
                    let st = states.entry(mac.clone()).or_insert(SyncState {
                        phase: SyncPhase::Pending,
                        revision: 0,
                        reboot: false,
                        due_ms: due,
                        attempts: 0,
                        force: false,
                        last_notify: None,
                    });
                    take_in(st, c.seq, reboot, due);
                    // An unregister is sent even when the bytes are what the phone has (a
                    // second unregister): the reboot is the point.
                    st.force |= c.kind_for(mac).forces_reboot();
                    touched.push((mac.clone(), Some(st.clone())));
                }
            }
            // States and cursor in one batch: a crash loses both or neither. Queued under the
            // lock, so a manual sync taken in meanwhile is saved after it.
            app.store.sync_save(Some(last), touched);
        }
        *cursor = last;
    }
}

/// What to do with a device whose step is due.
enum Step {
    Drop,
    InSync,
    Wait(u64),
    Fail,
    Send {
        notify: sip::Notify,
        target: sip::Target,
        event: String,
    },
}

fn now_plus(d: Duration) -> u64 {
    now_ms() + d.as_millis() as u64
}

/// Backoff after `attempts` NOTIFYs went unanswered by a fetch: ack_timeout × 2^(n−1), ≤ 1 h.
fn backoff(ack: Duration, attempts: u32) -> Duration {
    (ack * 2u32.saturating_pow(attempts.saturating_sub(1).min(16))).min(Duration::from_secs(3600))
}

async fn decide(app: &SharedApp, mac: &Mac, st: &SyncState) -> Step {
    let cfg = &app.config.sync;
    let applied = app
        .store
        .checkin(mac)
        .map(|c| c.applied_revision)
        .unwrap_or(0);
    if applied >= st.revision && !st.force {
        return Step::InSync;
    }
    if st.phase == SyncPhase::Notified && st.attempts >= cfg.max_attempts {
        return Step::Fail;
    }
    // Everything from the state, without holding the lock across an await.
    let prepared = {
        let state = app.store.read();
        let Some(device) = state.devices.get(mac).cloned() else {
            return Step::Drop;
        };
        let Some(model) = app.renderer.catalog().get(&device.model) else {
            return Step::Drop;
        };
        // Same hash: the main file renders to what the phone last fetched → nothing to send.
        if cfg.same_hash && !st.force && st.attempts == 0 {
            let etag = app.store.checkin(mac).and_then(|c| c.applied_etag);
            if let (Some(spec), Some(etag)) = (model.main_file(), etag) {
                if app
                    .renderer
                    .render_device(&state, &device, spec)
                    .is_ok_and(|r| r.etag == etag)
                {
                    drop(state);
                    app.store.mark_applied(mac, st.revision);
                    return Step::InSync;
                }
            }
        }
        // Address and authenticate as the phone knows itself: the identity of the main file it
        // last fetched; a phone that never fetched gets the current primary line.
        let applied = app.store.checkin(mac).and_then(|c| c.applied_identity);
        let current = crate::render::context::device_context(&state, model, &device, "")
            .ok()
            .and_then(|c| crate::render::context::primary_identity(&c));
        let id = applied.or(current);
        let notify = sip::Notify {
            user: id
                .as_ref()
                .map(|i| i.user.clone())
                .unwrap_or_else(|| device.mac.to_string()),
            event: if st.reboot {
                model.notify.reboot.clone()
            } else {
                model.notify.resync.clone()
            },
            auth_username: id
                .as_ref()
                .map(|i| i.auth_username.clone())
                .unwrap_or_default(),
            password: id
                .map(|i| i.password.expose().to_string())
                .unwrap_or_default(),
        };
        let group = state.groups.get(&device.group).cloned();
        let seen_ip = app
            .store
            .checkin(mac)
            .map(|c| c.ip)
            .filter(|ip| !ip.is_empty());
        (device, group, seen_ip, notify, model.sip_port)
    };
    let (device, group, seen_ip, notify, sip_port) = prepared;
    let loopback_only = app.config.sync.loopback_only;
    match target(&device, group.as_ref(), seen_ip, sip_port, loopback_only).await {
        Some(target) => {
            let event = notify.event.clone();
            Step::Send {
                notify,
                target,
                event,
            }
        }
        // Never seen, no target: the phone will fetch when it boots.
        None => Step::Wait(u64::MAX),
    }
}

/// `notify_target`, else the group's proxy (through the registrar), else the last-seen address.
/// With `[sync] loopback_only` only a literal loopback address is a target.
async fn target(
    d: &Device,
    group: Option<&crate::domain::Group>,
    seen_ip: Option<String>,
    sip_port: u16,
    loopback_only: bool,
) -> Option<sip::Target> {
    if let Some(t) = &d.notify_target {
        let addr = resolve(&t.host, t.port, loopback_only).await?;
        return Some(sip::Target {
            tcp: t.tcp,
            addr,
            host: t.host.clone(),
        });
    }
    if let Some(g) = group {
        if let Some(proxy) = &g.sip.proxy {
            let (host, port) = match proxy.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') || h.ends_with(']') => (
                    h.trim_matches(['[', ']']).to_string(),
                    p.parse().unwrap_or(g.sip.port),
                ),
                _ => (proxy.trim_matches(['[', ']']).to_string(), g.sip.port),
            };
            let addr = resolve(&host, port, loopback_only).await?;
            let tcp = g.sip.transport != crate::domain::Transport::Udp;
            return Some(sip::Target { tcp, addr, host });
        }
    }
    let ip: std::net::IpAddr = seen_ip?.parse().ok()?;
    if loopback_only && !ip.is_loopback() {
        tracing::debug!(mac = %d.mac, %ip, "not a loopback address; [sync] loopback_only skips it");
        return None;
    }
    Some(sip::Target {
        tcp: false,
        addr: (ip, sip_port).into(),
        host: ip.to_string(),
    })
}

/// The address of a NOTIFY destination. With `loopback_only` it must be a literal loopback
/// address: anything else is refused before any DNS lookup, so nothing leaves the host.
async fn resolve(host: &str, port: u16, loopback_only: bool) -> Option<std::net::SocketAddr> {
    if loopback_only {
        let ip = loopback_literal(host);
        if ip.is_none() {
            tracing::debug!(
                host,
                "not a loopback address; [sync] loopback_only skips it"
            );
        }
        return ip.map(|ip| std::net::SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port)).await.ok()?.next()
}

/// `host` as a loopback IP literal (`127.0.0.0/8`, `::1`, bracketed or not), else `None`.
fn loopback_literal(host: &str) -> Option<std::net::IpAddr> {
    let ip: std::net::IpAddr = host.trim_matches(['[', ']']).parse().ok()?;
    ip.is_loopback().then_some(ip)
}

/// The dispatcher loop: runs until `stop` turns true.
pub(crate) async fn run(app: SharedApp, mut stop: watch::Receiver<bool>) {
    while dispatch(app.clone(), &mut stop).await {}
}

/// Runs the dispatcher while this server has the turn: false when stopped, true when the
/// turn was lost (the caller waits for it again).
async fn dispatch(app: SharedApp, stop: &mut watch::Receiver<bool>) -> bool {
    // Servers sharing one store run one dispatcher between them: wait for the turn, then
    // take over the work the last one persisted.
    if app.store.shared() {
        loop {
            match app.store.try_lead() {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "asking for the dispatcher's turn failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(LEAD_RETRY) => {}
                _ = stop.changed() => return false,
            }
        }
        match app.store.sync_load() {
            Ok((_, states)) => {
                let mut mine = app.sync.states.lock().unwrap_or_else(|p| p.into_inner());
                app.sync.leading.store(true, Ordering::Release);
                *mine = states.into_iter().collect();
                // Then the manual syncs queued meanwhile, at once.
                app.sync.requests_hint.store(true, Ordering::Release);
            }
            Err(e) => {
                tracing::error!(error = %e, "loading the persisted sync work failed");
                return true;
            }
        }
        tracing::info!("this server now sends the NOTIFYs");
    }
    let mut commits = app.store.subscribe();
    let mut cursor = app.store.sync_load().map(|(c, _)| c).unwrap_or(0);
    let mut checked = tokio::time::Instant::now();
    let ack = Duration::from_secs(app.config.sync.ack_timeout_s);
    let control = tokio::spawn(control(app.clone(), stop.clone()));
    let _control = AbortOnDrop(control);
    loop {
        if app.store.shared() && checked.elapsed() >= LEAD_RETRY {
            checked = tokio::time::Instant::now();
            if !app.store.try_lead().unwrap_or(false) {
                // The database session holding the turn is gone: another server takes over
                // from the persisted work; this one stops sending.
                tracing::error!("lost the dispatcher's turn: this server stops sending NOTIFYs");
                let _states = app.sync.states.lock().unwrap_or_else(|p| p.into_inner());
                app.sync.leading.store(false, Ordering::Release);
                return true;
            }
            app.sync.requests_hint.store(true, Ordering::Release);
        }
        // Manual syncs queued on any server (announced, or looked for every second).
        if app.store.shared() && app.sync.requests_hint.swap(false, Ordering::AcqRel) {
            app.sync.take_requests(&app);
        }
        ingest(&app, &mut cursor);
        let now = now_ms();
        let (due, next): (Vec<(Mac, SyncState)>, Option<u64>) = {
            let states = app.sync.states.lock().unwrap_or_else(|p| p.into_inner());
            let busy = app.sync.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            let mut due: Vec<_> = states
                .iter()
                .filter(|(m, s)| {
                    matches!(s.phase, SyncPhase::Pending | SyncPhase::Notified)
                        && s.due_ms <= now
                        && !busy.contains(*m)
                })
                .map(|(m, s)| (m.clone(), s.clone()))
                .collect();
            due.sort_by_key(|(m, s)| (s.due_ms, m.clone()));
            let next = states
                .iter()
                .filter(|(m, s)| {
                    matches!(s.phase, SyncPhase::Pending | SyncPhase::Notified)
                        && s.due_ms > now
                        && !busy.contains(*m)
                })
                .map(|(_, s)| s.due_ms)
                .min();
            (due, next)
        };
        for (mac, st) in due {
            if *stop.borrow() {
                return false;
            }
            match decide(&app, &mac, &st).await {
                Step::Drop => {
                    let mut states = app.sync.states.lock().unwrap_or_else(|p| p.into_inner());
                    states.remove(&mac);
                    save(&app, &mac, None);
                }
                Step::InSync => update(&app, &mac, |s| {
                    s.phase = SyncPhase::InSync;
                    s.force = false;
                }),
                Step::Wait(until) => update(&app, &mac, |s| s.due_ms = until),
                Step::Fail => {
                    tracing::warn!(mac = %mac, "the phone did not fetch its files after {} NOTIFYs", st.attempts);
                    update(&app, &mac, |s| s.phase = SyncPhase::Failed)
                }
                Step::Send {
                    notify,
                    target,
                    event,
                } => {
                    if let Some(a) = &app.sync.adaptive {
                        if !admit(a, &mac, st.revision, stop).await {
                            return false;
                        }
                    }
                    app.sync.pacer.wait().await;
                    let Ok(permit) = app.sync.window.clone().acquire_owned().await else {
                        return false;
                    };
                    app.sync
                        .in_flight
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(mac.clone());
                    let app2 = app.clone();
                    tokio::spawn(async move {
                        let outcome = app2.sync.client.notify(&notify, &target).await;
                        drop(permit);
                        tracing::info!(mac = %mac, event = %event, to = %target.addr, result = %outcome.describe(), "NOTIFY");
                        app2.sync.metrics.sent(outcome.ok(), &event);
                        let max = app2.config.sync.max_attempts;
                        update(&app2, &mac, |s| {
                            s.attempts += 1;
                            s.force = false;
                            s.last_notify = Some(Box::new(LastNotify {
                                at: rfc3339(),
                                event: event.clone(),
                                result: outcome.describe(),
                                attempts: s.attempts,
                            }));
                            if outcome.ok() {
                                s.phase = SyncPhase::Notified;
                                s.due_ms = now_plus(backoff(ack, s.attempts));
                            } else if s.attempts >= max {
                                s.phase = SyncPhase::Failed;
                            } else {
                                s.due_ms =
                                    now_plus(backoff(ack, s.attempts).min(Duration::from_secs(60)));
                            }
                        });
                        if !outcome.ok() {
                            release(&app2, &mac);
                        }
                        app2.sync
                            .in_flight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&mac);
                        app2.sync.wake.notify_one();
                    });
                }
            }
        }
        // Capped: a device with no target waits "forever" (due = u64::MAX).
        let sleep = next
            .map(|t| Duration::from_millis(t.saturating_sub(now_ms())))
            .unwrap_or(Duration::MAX)
            .min(if app.store.shared() {
                LEAD_RETRY
            } else {
                Duration::from_secs(3600)
            });
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = commits.changed() => {}
            _ = app.sync.wake.notified() => {}
            _ = stop.changed() => return false,
        }
    }
}

/// Adaptive pacing: waits for a place in the window for `mac` (at `revision`); false when
/// the dispatcher is stopping.
async fn admit(a: &Adaptive, mac: &Mac, revision: u64, stop: &mut watch::Receiver<bool>) -> bool {
    loop {
        let freed = a.freed.notified();
        {
            let mut awaiting = a.awaiting.lock().unwrap_or_else(|p| p.into_inner());
            if awaiting.len() < a.limit.load(Ordering::Acquire) || awaiting.contains_key(mac) {
                awaiting.insert(mac.clone(), (revision, Instant::now()));
                return true;
            }
        }
        tokio::select! {
            _ = freed => {}
            _ = tokio::time::sleep(pacing::TICK) => {}
            _ = stop.changed() => return false,
        }
    }
}

/// Adaptive pacing's control loop: every [`pacing::TICK`], gives back the places of phones
/// that fetched their revision (or did not within [`pacing::AWAIT_TIMEOUT`]) and steps the
/// window by the phone listener's p99 over the tick.
async fn control(app: SharedApp, mut stop: watch::Receiver<bool>) {
    let Some(a) = &app.sync.adaptive else { return };
    let mut tick = tokio::time::interval(pacing::TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let in_flight = {
            let mut awaiting = a.awaiting.lock().unwrap_or_else(|p| p.into_inner());
            awaiting.retain(|mac, (revision, since)| {
                since.elapsed() < pacing::AWAIT_TIMEOUT
                    && app
                        .store
                        .checkin(mac)
                        .is_none_or(|c| c.applied_revision < *revision)
            });
            awaiting.len()
        };
        let p99 = app.sync.latency.take_p99();
        let limit = {
            let mut w = a.window.lock().unwrap_or_else(|p| p.into_inner());
            w.step(p99.map(|(p, _)| p), in_flight);
            w.limit()
        };
        a.limit.store(limit, Ordering::Release);
        tracing::trace!(
            in_flight,
            window = limit,
            p99_ms = p99.map(|(p, _)| p.as_secs_f64() * 1000.0),
            "adaptive pacing"
        );
        a.freed.notify_waiters();
    }
}

/// Gives back `mac`'s place in the window (its NOTIFY failed).
fn release(app: &SharedApp, mac: &Mac) {
    if let Some(a) = &app.sync.adaptive {
        a.awaiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(mac);
        a.freed.notify_waiters();
    }
}

/// Aborts a task when dropped (the control loop ends with the dispatcher).
struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Applies `f` to a device's state (if it still has one) and saves it.
fn update(app: &SharedApp, mac: &Mac, f: impl FnOnce(&mut SyncState)) {
    let mut states = app.sync.states.lock().unwrap_or_else(|p| p.into_inner());
    let Some(st) = states.get_mut(mac) else {
        return;
    };
    f(st);
    // Queued under the lock: a manual sync taken in meanwhile is saved after it.
    save(app, mac, Some(st.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(phase: SyncPhase) -> SyncState {
        SyncState {
            phase,
            revision: 3,
            reboot: false,
            due_ms: 0,
            attempts: 2,
            force: false,
            last_notify: None,
        }
    }

    #[test]
    fn a_lines_change_on_a_model_that_reboots_on_lines_sets_reboot() {
        let catalog = crate::catalog::Catalog::builtin().unwrap();
        let model = catalog.get("polycom-vvx-450");
        assert_eq!(model.unwrap().notify.reboot_on, vec![ChangeKind::Lines]);
        let mut st = pending(SyncPhase::InSync);
        take_in(&mut st, 7, needs_reboot(model, ChangeKind::Lines), 10);
        assert!(st.reboot);
        assert_eq!(
            (st.phase, st.revision, st.attempts),
            (SyncPhase::Pending, 7, 0)
        );
        // Settings, keys and templates re-sync on that model; a later settings change does not
        // clear a pending reboot.
        for k in [ChangeKind::Settings, ChangeKind::Keys, ChangeKind::Template] {
            assert!(!needs_reboot(model, k), "{k}");
        }
        take_in(&mut st, 8, needs_reboot(model, ChangeKind::Settings), 20);
        assert!(st.reboot, "reboot needs accumulate until sent");
        let mut st = pending(SyncPhase::Notified);
        take_in(&mut st, 9, needs_reboot(model, ChangeKind::Settings), 30);
        assert!(!st.reboot);
        assert!(!needs_reboot(None, ChangeKind::Lines), "unknown model");
    }

    #[tokio::test]
    async fn loopback_only_takes_literal_loopback_addresses_and_nothing_else() {
        for (host, want) in [
            ("127.0.0.1", Some("127.0.0.1:5060")),
            ("127.8.9.10", Some("127.8.9.10:5060")),
            ("::1", Some("[::1]:5060")),
            ("[::1]", Some("[::1]:5060")),
            ("10.0.0.1", None),
            ("192.0.2.7", None),
            ("2001:db8::1", None),
            ("0.0.0.0", None),
            // Names are never looked up, even one that would resolve to loopback.
            ("localhost", None),
            ("pbx.example.com", None),
        ] {
            let got = resolve(host, 5060, true).await.map(|a| a.to_string());
            assert_eq!(got.as_deref(), want, "{host}");
        }
        // Without the switch a literal address is taken as it is.
        assert_eq!(
            resolve("192.0.2.7", 5060, false)
                .await
                .map(|a| a.to_string()),
            Some("192.0.2.7:5060".to_string())
        );
    }

    #[test]
    fn an_unregister_reboots_every_model_whatever_its_reboot_on() {
        let catalog = crate::catalog::Catalog::builtin().unwrap();
        for m in catalog.models() {
            assert!(needs_reboot(Some(m), ChangeKind::Unregister), "{}", m.id);
        }
    }

    #[test]
    fn change_entries_stored_without_a_kind_get_the_kind_their_action_implied() {
        let entry = |action: &str| {
            serde_json::json!({
                "seq": 1, "at": "2026-01-01T00:00:00Z", "actor": "cli", "action": action,
                "group": "g1", "subject": "x", "devices": ["0004f2000001"], "detail": {}
            })
        };
        let old: crate::store::Change = serde_json::from_value(entry("user.update")).unwrap();
        assert_eq!(
            (old.action, old.kind),
            (crate::domain::Action::UserUpdate, ChangeKind::Settings)
        );
        let old: crate::store::Change = serde_json::from_value(entry("sca.create")).unwrap();
        assert_eq!(old.kind, ChangeKind::Lines);
        // A stored kind wins, and the entry round-trips with the same action string.
        let mut new = entry("user.update");
        new["kind"] = "lines".into();
        let c: crate::store::Change = serde_json::from_value(new).unwrap();
        assert_eq!(c.kind, ChangeKind::Lines);
        let back = serde_json::to_value(&c).unwrap();
        assert_eq!(
            (back["action"].as_str(), back["kind"].as_str()),
            (Some("user.update"), Some("lines"))
        );
    }

    fn mac(n: u8) -> Mac {
        Mac::parse(&format!("805ec00000{n:02x}")).unwrap()
    }

    fn notified_once() -> SyncState {
        SyncState {
            last_notify: Some(Box::new(LastNotify {
                at: "2026-12-04T00:00:00Z".into(),
                event: "check-sync".into(),
                result: "200 OK".into(),
                attempts: 1,
            })),
            ..pending(SyncPhase::Notified)
        }
    }

    #[test]
    fn a_manual_sync_is_due_now_forced_with_attempts_reset_and_keeps_the_last_notify() {
        let prev = notified_once();
        let st = requested(Some(&prev), 9, true, 1234);
        assert_eq!(
            (
                st.phase,
                st.revision,
                st.reboot,
                st.due_ms,
                st.attempts,
                st.force
            ),
            (SyncPhase::Pending, 9, true, 1234, 0, true)
        );
        assert_eq!(st.last_notify, prev.last_notify);
        assert_eq!(requested(None, 1, false, 0).last_notify, None);
    }

    #[test]
    fn queued_manual_syncs_give_one_state_per_device_the_last_request_winning() {
        let mut states = HashMap::new();
        states.insert(mac(1), notified_once());
        let req = |n, revision, reboot| SyncRequest {
            mac: mac(n),
            revision,
            reboot,
        };
        // The dispatcher's view of device 2 is newer than the requester's.
        let revision_of = |m: &Mac| if *m == mac(2) { 12 } else { 0 };
        let out = apply_requests(
            &states,
            vec![req(1, 5, true), req(2, 7, false), req(1, 6, false)],
            revision_of,
            99,
        );
        assert_eq!(out.len(), 2, "{out:?}");
        let one = &out.iter().find(|(m, _)| *m == mac(1)).unwrap().1;
        assert_eq!((one.revision, one.reboot, one.force), (6, false, true));
        assert_eq!(one.last_notify, states[&mac(1)].last_notify);
        let two = &out.iter().find(|(m, _)| *m == mac(2)).unwrap().1;
        assert_eq!((two.revision, two.due_ms), (12, 99));
        assert!(apply_requests(&states, Vec::new(), revision_of, 0).is_empty());
    }

    #[test]
    fn a_followed_state_older_than_the_one_taken_for_its_device_is_skipped() {
        let mut states = HashMap::new();
        let mut seen = HashMap::new();
        merge_followed(
            &mut states,
            &mut seen,
            vec![
                (mac(1), 10, notified_once()),
                (mac(2), 11, pending(SyncPhase::Failed)),
            ],
        );
        assert_eq!(states[&mac(1)].phase, SyncPhase::Notified);
        // Read again by the look-back (and an older row), then a newer one.
        merge_followed(
            &mut states,
            &mut seen,
            vec![
                (mac(1), 10, pending(SyncPhase::InSync)),
                (mac(1), 9, pending(SyncPhase::InSync)),
                (mac(2), 12, pending(SyncPhase::Pending)),
            ],
        );
        assert_eq!(states[&mac(1)].phase, SyncPhase::Notified);
        assert_eq!(states[&mac(2)].phase, SyncPhase::Pending);
        assert_eq!(seen[&mac(2)], 12);
    }

    #[test]
    fn backoff_doubles_from_the_ack_timeout() {
        let a = Duration::from_secs(120);
        assert_eq!(backoff(a, 1), a);
        assert_eq!(backoff(a, 2), a * 2);
        assert_eq!(backoff(a, 3), a * 4);
        assert_eq!(backoff(a, 30), Duration::from_secs(3600));
    }
}
