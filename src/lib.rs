//! deskprov: a provisioning server for SIP desk phones.
//!
//! The flow (see README "Architecture"): admin JSON → [`admin`] → [`store`] (validated by
//! [`domain`], persisted with its change log) ; phones fetch files from [`phone`]. [`server`]
//! wires the listeners; [`tls`] owns certificates; [`catalog`] the phone models.

pub(crate) mod admin;
pub mod backup;
pub mod catalog;
pub mod config;
pub(crate) mod console;
pub mod domain;
pub(crate) mod firmware;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod metrics;
pub mod migrate;
pub(crate) mod phone;
pub mod render;
pub(crate) mod secrets;
pub mod server;
pub mod store;
pub(crate) mod sync;
pub mod tls;

use std::sync::Arc;

/// Shared application state, passed to every handler (like axum's `State`).
pub struct App {
    pub config: config::Config,
    pub store: store::Store,
    pub(crate) renderer: render::Renderer,
    pub(crate) phone_auth: phone::PhoneAuth,
    pub(crate) sync: sync::Dispatcher,
    /// The metrics registry (`/metrics`).
    pub(crate) metrics: metrics::Metrics,
    /// Firmware images on disk, their downloads, the roll-out guard.
    pub(crate) firmware: firmware::Firmware,
    /// The phones' User-Agents, parsed once each.
    pub(crate) user_agents: phone::useragent::Cache,
}

pub(crate) type SharedApp = Arc<App>;
