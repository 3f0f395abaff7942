//! Listeners, wiring and graceful shutdown.
//!
//! [`Server::start`] prepares everything that can fail (data dir, TLS material, catalogue,
//! store, first admin token, bound sockets) before serving, so a misconfiguration is reported at
//! once. Each listener is a tokio task accepting TLS connections and serving HTTP/1.1 with hyper;
//! on shutdown they stop accepting, let in-flight requests finish (bounded), and return.
//! Connections are capped and timed out per `[limits]` ([`conn`]).

mod conn;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::render::Renderer;
use crate::store::{ObservationLimits, Store, StoreOptions};
use crate::tls::{self, DevPki};
use crate::{App, SharedApp};

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests may run on after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    #[error("{0}")]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error("opening the store in {path}: {source}")]
    Store {
        path: String,
        source: crate::store::StoreError,
    },
    #[error("{what} {addr}: {source}")]
    Io {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
}

/// Opens the store in `<data_dir>/store` with the configured limits.
pub fn open_store(config: &Config, catalog: Arc<Catalog>) -> Result<Store, ServerError> {
    secure_data_dir(&config.data_dir)?;
    let opts = StoreOptions {
        cache_bytes: config.store.cache_mb * 1024 * 1024,
        changes_keep: config.store.changes_keep,
        max_sca_per_user: config.rules.max_sca_per_user,
        limits: ObservationLimits {
            upload_max_files: config.phones.upload_max_files as usize,
            upload_max_total_bytes: config.phones.upload_max_total_bytes,
            unprovisioned_per_ip_per_min: config.phones.unprovisioned_per_ip_per_min,
            log_entries: config.phones.log_entries as usize,
        },
    };
    match config.store.backend {
        crate::config::StoreBackend::Embedded => {
            let path = config.data_dir.join("store");
            let key = config.key_file();
            let opened = if key == path.with_extension("key") {
                Store::open(&path, catalog, opts)
            } else {
                Store::open_with_key(&path, &key, catalog, opts)
            };
            opened.map_err(|source| ServerError::Store {
                path: path.display().to_string(),
                source,
            })
        }
        crate::config::StoreBackend::Postgres => Store::open_postgres(
            &config.store.url,
            &config.store.ca,
            &config.key_file(),
            catalog,
            opts,
        )
        .map_err(|source| ServerError::Store {
            path: "the PostgreSQL database (store.url)".into(),
            source,
        }),
    }
}

/// A started server: addresses it is bound to, and what first start created.
pub struct Server {
    pub app: SharedApp,
    pub admin_addr: SocketAddr,
    pub phones_addr: SocketAddr,
    pub phones_http_addr: Option<SocketAddr>,
    pub ca_pem: Option<PathBuf>,
    /// The admin token, when this start created it (first start).
    pub new_admin_token: Option<String>,
    listeners: Vec<Listener>,
}

/// What a listener's requests go to: the admin listener's router, or the phone handler
/// (called directly: it has no routes, and an axum router would cost every fetch its routing).
#[derive(Clone)]
enum Service {
    Router(Router),
    Phones(SharedApp),
}

/// One bound listener and what its connections get.
struct Listener {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    service: Service,
    gate: Arc<conn::Gate>,
    timeouts: conn::Timeouts,
}

async fn bind(what: &'static str, addr: &str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Io {
            what,
            addr: addr.to_string(),
            source,
        })
}

impl Server {
    pub async fn start(config: Config) -> Result<Server, ServerError> {
        config.validate()?;
        let (max_phones, per_ip, max_admin) =
            conn::fit_caps(&config.limits, conn::raise_fd_limit());
        let dir = config.data_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|source| ServerError::Io {
            what: "creating data directory",
            addr: dir.display().to_string(),
            source,
        })?;

        let (cert, key, ca_pem) = if config.tls.cert.is_empty() {
            tls::ensure_dev_pki(&dir, &config.tls.server_names)?;
            let pki = DevPki::at(&dir);
            (pki.server_pem, pki.server_key, Some(pki.ca_pem))
        } else {
            (
                PathBuf::from(&config.tls.cert),
                PathBuf::from(&config.tls.key),
                None,
            )
        };
        let acceptor = TlsAcceptor::from(tls::server_config(&cert, &key)?);
        let phone_acceptor = TlsAcceptor::from(tls::phone_server_config(
            &cert,
            &key,
            &config.tls.client_ca,
        )?);

        let catalog = Arc::new(Catalog::load(config.templates_dir())?);
        let store = open_store(&config, catalog.clone())?;
        let new_admin_token = first_admin_token(&store, &dir)?;

        let admin = bind("admin listener", &config.listen.admin).await?;
        let phones = bind("phone listener", &config.listen.phones).await?;
        let phones_http = match config.listen.phones_http.as_str() {
            "" => None,
            a => Some(bind("phone HTTP listener", a).await?),
        };
        let addr = |l: &TcpListener| l.local_addr().expect("bound");
        let (admin_addr, phones_addr) = (addr(&admin), addr(&phones));
        let phones_http_addr = phones_http.as_ref().map(addr);

        let base_url = config.phone_base_url(Some(phones_addr.port()));
        let renderer = Renderer::with_limits(
            catalog,
            base_url,
            &store.template_overrides(),
            config.render.cache_mb << 20,
            config.render.limits(),
        );
        let phone_auth = crate::phone::PhoneAuth::new(&config.phones);
        let sync = crate::sync::Dispatcher::new(&config.sync, &store)
            .await
            .map_err(|source| ServerError::Io {
                what: "SIP socket",
                addr: config.sync.sip_bind.clone(),
                source,
            })?;
        let metrics =
            crate::metrics::Metrics::new(store.metrics(), renderer.metrics(), &sync.metrics);
        let firmware = crate::firmware::Firmware::new(&config.data_dir, &config.firmware);
        let app: SharedApp = Arc::new(App {
            config,
            store,
            renderer,
            phone_auth,
            sync,
            metrics,
            firmware,
            user_agents: Default::default(),
        });
        let timeouts = conn::Timeouts {
            header: Duration::from_secs(app.config.limits.header_timeout_s),
            idle: Duration::from_secs(app.config.limits.idle_timeout_s),
        };
        // The phone listeners share one gate; the admin listener has its own, so a phone flood
        // never takes the admins' places.
        let phone_gate = conn::Gate::new("phones", max_phones, Some(per_ip));
        let listener = |tcp, tls, service, gate: &Arc<conn::Gate>| Listener {
            tcp,
            tls,
            service,
            gate: gate.clone(),
            timeouts,
        };
        let admin_service = Service::Router(crate::console::router(
            app.clone(),
            crate::admin::router(app.clone()),
        ));
        let phone_service = Service::Phones(app.clone());
        let mut listeners = vec![
            listener(
                admin,
                Some(acceptor.clone()),
                admin_service,
                &conn::Gate::new("admin", max_admin, None),
            ),
            listener(
                phones,
                Some(phone_acceptor),
                phone_service.clone(),
                &phone_gate,
            ),
        ];
        if let Some(l) = phones_http {
            listeners.push(listener(l, None, phone_service, &phone_gate));
        }
        Ok(Server {
            app,
            admin_addr,
            phones_addr,
            phones_http_addr,
            ca_pem,
            new_admin_token,
            listeners,
        })
    }

    /// Serves until `shutdown` resolves, then drains and returns.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        // Before the listeners, so no metrics scrape sees the work as done before it began.
        let ahead = self
            .app
            .config
            .render
            .ahead
            .then(|| render_ahead(self.app.clone(), stop_rx.clone()))
            .flatten();
        let tasks: Vec<_> = self
            .listeners
            .into_iter()
            .map(|l| tokio::spawn(serve(l, stop_rx.clone())))
            .collect();
        let dispatcher = tokio::spawn(crate::sync::run(self.app.clone(), stop_rx.clone()));
        let upkeep = tokio::spawn(store_upkeep(self.app.clone(), stop_rx.clone()));
        let follower = self
            .app
            .store
            .shared()
            .then(|| tokio::spawn(follow_others(self.app.clone(), stop_rx.clone())));
        shutdown.await;
        tracing::info!("shutting down: no new connections, draining in-flight requests");
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = t.await;
        }
        let _ = dispatcher.await;
        if let Some(a) = ahead {
            let _ = tokio::task::spawn_blocking(move || a.join()).await;
        }
        let _ = upkeep.await;
        if let Some(f) = follower {
            let _ = f.await;
        }
        // Every write was flushed before it was acknowledged; this makes the last one certain.
        let app = self.app.clone();
        match tokio::task::spawn_blocking(move || app.store.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "final flush failed"),
            Err(e) => tracing::error!(error = %e, "final flush failed"),
        }
        tracing::info!("stopped");
    }
}

/// On first start (no token at all) creates the platform token `admin` and writes it to
/// `<data_dir>/admin-token` (0600). Returns the secret to print once.
fn first_admin_token(store: &Store, dir: &Path) -> Result<Option<String>, ServerError> {
    if !store.read().tokens.is_empty() {
        return Ok(None);
    }
    let (_, secret) = store
        .create_token("server", "admin", None)
        .map_err(|source| ServerError::Store {
            path: dir.display().to_string(),
            source,
        })?;
    tls::write_private(&dir.join("admin-token"), format!("{secret}\n").as_bytes())?;
    Ok(Some(secret))
}

/// Renders the devices' files into the cache on a thread of its own, at a lower priority than
/// the phone listener's (so a storm that arrives meanwhile is served first), until done, the
/// cache's share is full, or the server stops. Without a thread (none could be started) the
/// files are rendered on their first fetch, as with `[render] ahead = false`.
fn render_ahead(
    app: SharedApp,
    stop: watch::Receiver<bool>,
) -> Option<std::thread::JoinHandle<()>> {
    let metrics = app.renderer.metrics().clone();
    let state = app.store.read();
    metrics.ahead_pending(state.devices.len());
    let done = metrics.clone();
    std::thread::Builder::new()
        .name("deskprov-ahead".into())
        .spawn(move || {
            lower_priority();
            let started = std::time::Instant::now();
            let a = app.renderer.render_ahead(&state, &|| *stop.borrow());
            metrics.ahead_pending(0);
            tracing::info!(
                devices = a.devices,
                files = a.files,
                failed = a.failed,
                cache_full = a.full,
                seconds = started.elapsed().as_secs_f64(),
                "rendered ahead"
            );
        })
        .inspect_err(|e| {
            done.ahead_pending(0);
            tracing::warn!(error = %e, "no thread to render ahead: files are rendered on their first fetch");
        })
        .ok()
}

/// Lowers the calling thread's scheduling priority (nice 10; Linux: per thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority with the caller's own thread id changes only that thread's nice value.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}

/// The first pause after a failed accept; it doubles on each failure in a row, up to
/// [`ACCEPT_BACKOFF_MAX`], and starts over after a success.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(50);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

async fn serve(l: Listener, mut stop: watch::Receiver<bool>) {
    let Listener {
        tcp: listener,
        tls,
        service,
        gate,
        timeouts,
    } = l;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    x
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, pause_ms = backoff.as_millis() as u64, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        // Over the cap: closed at once, before any TLS work.
        let Some(permit) = gate.admit(crate::phone::client_ip(peer)) else {
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let service = service.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let activity = conn::Activity::new();
            // One service per connection; the phone handler gets the peer address and client
            // certificate (the admin listener asks for no certificate and reads no address).
            let svc = |cert: Option<Arc<[u8]>>| {
                let activity = activity.clone();
                let service = service.clone();
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let busy = activity.begin();
                    let (service, cert) = (service.clone(), cert.clone());
                    let req = req.map(axum::body::Body::new);
                    async move {
                        let r = match service {
                            Service::Router(router) => router.oneshot(req).await,
                            Service::Phones(app) => {
                                Ok(crate::phone::serve(app, req, peer, cert).await)
                            }
                        };
                        drop(busy);
                        r
                    }
                })
            };
            let mut builder = hyper::server::conn::http1::Builder::new();
            // Header and idle timeouts are `conn::bounded`'s: hyper's own header timer also
            // runs while a keep-alive connection waits for its next request.
            builder.header_read_timeout(None);
            let result = match tls {
                Some(tls) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        conn::ack_now(stream.get_ref().0);
                        let leaf = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| Arc::<[u8]>::from(c.as_ref()));
                        let svc = svc(leaf);
                        let io = TokioIo::new(conn::Tracked::new(stream, activity.clone()));
                        let c = watcher.watch(builder.serve_connection(io, svc));
                        conn::bounded(c, &activity, timeouts).await
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
                None => {
                    let io = TokioIo::new(conn::Tracked::new(tcp, activity.clone()));
                    let c = watcher.watch(builder.serve_connection(io, svc(None)));
                    conn::bounded(c, &activity, timeouts).await
                }
            };
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
                Err(timeout) => tracing::debug!(%peer, timeout, "connection closed by its timeout"),
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within the drain timeout");
    }
}

/// The store's background upkeep (the key roll after replaced passwords), once a second on the
/// blocking pool.
async fn store_upkeep(app: SharedApp, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
        let a = app.clone();
        match tokio::task::spawn_blocking(move || a.store.maintain()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "store upkeep failed"),
            Err(e) => tracing::error!(error = %e, "store upkeep failed"),
        }
    }
}

/// How long a server waits for another server's commit announcement before it looks anyway.
const FOLLOW_POLL: Duration = Duration::from_secs(1);

/// With a store shared by several servers: takes in every commit made on the others (woken
/// by their announcement, or by the poll), so this server serves it; a followed template
/// change reloads the renderer.
async fn follow_others(app: SharedApp, stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        let a = app.clone();
        let followed = tokio::task::spawn_blocking(move || {
            a.store.wait_for_change(FOLLOW_POLL);
            // The dispatching server has the sync states: only the others read them.
            a.store.follow(!a.sync.leading())
        })
        .await;
        match followed {
            Ok(Ok(f)) => {
                // The dispatcher's sync states (shown here), or the cue to take manual syncs.
                app.sync.followed(f.sync_states);
                if f.templates {
                    if let Err(e) = app.renderer.reload(&app.store.template_overrides()) {
                        tracing::error!(error = %e, "reloading followed template overrides failed");
                    }
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "following the other servers' commits failed");
                tokio::time::sleep(FOLLOW_POLL).await;
            }
            Err(e) => tracing::error!(error = %e, "following the other servers' commits failed"),
        }
    }
}

/// Makes the data directory private: created 0700, everything in it 0600 (0700 for folders),
/// and every file this process creates from now on private too (umask 077; the process
/// writes nothing that others should read).
fn secure_data_dir(dir: &Path) -> Result<(), ServerError> {
    let io = |source| ServerError::Io {
        what: "securing data directory",
        addr: dir.display().to_string(),
        source,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // SAFETY: umask only sets the process's file-creation mask; it cannot fail.
        unsafe {
            libc::umask(0o077);
        }
        std::fs::create_dir_all(dir).map_err(io)?;
        fn walk(p: &Path) -> std::io::Result<()> {
            let meta = std::fs::symlink_metadata(p)?;
            if meta.file_type().is_symlink() {
                return Ok(());
            }
            let mode = if meta.is_dir() { 0o700 } else { 0o600 };
            if meta.permissions().mode() & 0o777 != mode {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
            }
            if meta.is_dir() {
                for e in std::fs::read_dir(p)? {
                    walk(&e?.path())?;
                }
            }
            Ok(())
        }
        walk(dir).map_err(io)?;
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir).map_err(io)?;
    Ok(())
}
