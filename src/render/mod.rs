//! Rendering: Tera templates per (model, file), the context builder, validation, and a cache.
//!
//! The [`Renderer`] holds an immutable [`Engine`] (every template parsed, built-in or uploaded)
//! behind an `RwLock<Arc<_>>`: a template change builds a new engine and swaps it in, so renders
//! never wait for parsing. Rendered bytes are cached by (device, file) and tagged with the
//! device revision and the engine generation: a repeat fetch at the same revision does no
//! rendering at all.

pub(crate) mod context;
pub mod fixtures;
pub(crate) mod flatten;
pub(crate) mod limits;
pub(crate) mod serve;

pub use serve::{device_file, Preview};
pub(crate) use serve::{serve_file, Outcome};

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::body::Bytes;

use crate::catalog::{Catalog, FileSpec, Model};
use crate::domain::state::State;
use crate::domain::{Device, DomainError, Mac, TemplateOverride};

/// Why a file could not be rendered (or a template was refused).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RenderError {
    #[error("{template}:{line}:{column}: {message}")]
    Template {
        template: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{template} renders malformed XML at {line}:{column}: {message}")]
    Xml {
        template: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// A render limit (`[render] template_time_ms`, `template_max_bytes`) was exceeded.
    #[error("{template} {exceeded}")]
    Limit {
        template: String,
        exceeded: limits::Exceeded,
    },
    #[error(transparent)]
    Domain(#[from] DomainError),
}

/// Every template, parsed.
pub(crate) struct Engine {
    tera: tera::Tera,
    /// Bumped on every rebuild; part of every cache tag.
    generation: u64,
    limits: limits::Limits,
    /// Per Tera name, where ticks and guards were put in (to report the author's columns).
    shifts: HashMap<String, limits::Instrumented>,
}

/// The Tera name of a file's template: XML types get an `.xml` suffix, which turns on escaping.
fn tera_name(model: &str, spec: &FileSpec) -> String {
    let suffix = if spec.is_xml() { ".xml" } else { "" };
    format!("{model}/{}{suffix}", spec.template)
}

/// XML escaping for `{{ value }}` in XML templates.
fn escape_xml(input: &str, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    for c in input.chars() {
        match c {
            '&' => out.write_all(b"&amp;")?,
            '<' => out.write_all(b"&lt;")?,
            '>' => out.write_all(b"&gt;")?,
            '"' => out.write_all(b"&quot;")?,
            '\'' => out.write_all(b"&apos;")?,
            c => {
                let mut b = [0u8; 4];
                out.write_all(c.encode_utf8(&mut b).as_bytes())?;
            }
        }
    }
    Ok(())
}

fn new_tera() -> tera::Tera {
    let mut t = tera::Tera::new();
    t.autoescape_on(vec![".xml"]);
    t.set_escape_fn(escape_xml);
    limits::register(&mut t);
    t
}

fn template_error(
    template: &str,
    e: &tera::Error,
    shifts: Option<&limits::Instrumented>,
) -> RenderError {
    let (line, column, message) = match e.kind() {
        tera::ErrorKind::SyntaxError(r) | tera::ErrorKind::RenderingError(r) => {
            let (line, column) = (r.span().start_line, r.span().start_col + 1);
            let column = shifts.map_or(column, |s| s.column(line, column));
            (line, column, r.message().to_string())
        }
        _ => (0, 0, e.to_string()),
    };
    RenderError::Template {
        template: template.to_string(),
        line,
        column,
        message,
    }
}

impl Engine {
    /// Parses every model's templates, an override's live version replacing the built-in one.
    /// `extra` is one more (model, template, body) not yet stored, for validation. Every
    /// template is instrumented ([`limits::instrument`]); uploaded ones must also pass its
    /// whitelist.
    fn build(
        catalog: &Catalog,
        overrides: &[TemplateOverride],
        extra: Option<(&str, &str, &str)>,
        generation: u64,
        limits: limits::Limits,
    ) -> Result<Engine, RenderError> {
        let live: HashMap<(&str, &str), &str> = overrides
            .iter()
            .filter_map(|o| Some(((o.model.as_str(), o.template.as_str()), o.active_body()?)))
            .collect();
        let mut tera = new_tera();
        let mut sources = Vec::new();
        for m in catalog.models() {
            for f in &m.files {
                let key = (m.id.as_str(), f.template.as_str());
                let (body, uploaded) = match extra {
                    Some((em, et, eb)) if (em, et) == key => (eb, true),
                    _ => match live.get(&key) {
                        Some(b) => (*b, true),
                        None => (
                            m.templates
                                .get(&f.template)
                                .map(String::as_str)
                                .unwrap_or(""),
                            false,
                        ),
                    },
                };
                let inst =
                    limits::instrument(body, uploaded).map_err(|(line, column, message)| {
                        // Tera's own syntax error, where it has one, says more than ours.
                        match new_tera().add_raw_template("check", body) {
                            Err(e) => template_error(&f.template, &e, None),
                            Ok(_) => RenderError::Template {
                                template: f.template.clone(),
                                line,
                                column,
                                message,
                            },
                        }
                    })?;
                sources.push((tera_name(&m.id, f), inst, f.template.clone()));
            }
        }
        let mut shifts = HashMap::new();
        for (name, inst, template) in sources {
            tera.add_raw_template(&name, &inst.source)
                .map_err(|e| template_error(&template, &e, Some(&inst)))?;
            shifts.insert(name, inst);
        }
        Ok(Engine {
            tera,
            generation,
            limits,
            shifts,
        })
    }

    fn render(
        &self,
        model: &str,
        spec: &FileSpec,
        ctx: &serde_json::Value,
    ) -> Result<String, RenderError> {
        let ctx = tera::Context::from_serialize(ctx)
            .map_err(|e| template_error(&spec.template, &e, None))?;
        let name = tera_name(model, spec);
        let mut out = limits::Capped::new(self.limits.max_bytes);
        let (res, exceeded) =
            limits::run(self.limits, || self.tera.render_to(&name, &ctx, &mut out));
        if let Some(exceeded) = exceeded {
            return Err(RenderError::Limit {
                template: spec.template.clone(),
                exceeded,
            });
        }
        res.map_err(|e| template_error(&spec.template, &e, self.shifts.get(&name)))?;
        let out = String::from_utf8(out.buf).map_err(|e| RenderError::Template {
            template: spec.template.clone(),
            line: 0,
            column: 0,
            message: e.to_string(),
        })?;
        if spec.is_xml() {
            flatten::check_xml(&out).map_err(|(line, column, message)| RenderError::Xml {
                template: spec.template.clone(),
                line,
                column,
                message,
            })?;
        }
        Ok(out)
    }
}

/// A rendered file with its validators.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub bytes: Bytes,
    /// Strong ETag (quoted), a hash of the bytes.
    pub(crate) etag: String,
    pub(crate) content_type: String,
    /// The device revision it was rendered at (0 for common files).
    pub(crate) revision: u64,
    /// The primary registration these bytes give the phone (per-device files).
    pub(crate) identity: Option<crate::domain::SipIdentity>,
}

impl Rendered {
    fn new(text: String, spec: &FileSpec, revision: u64) -> Rendered {
        let hash = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        Rendered {
            etag: format!("\"{}\"", hex::encode(&hash.as_ref()[..16])),
            bytes: Bytes::from(text),
            content_type: spec.content_type.clone(),
            revision,
            identity: None,
        }
    }
}

/// Runs a render (a cache miss) so that it cannot stall the async workers: on a multi-thread
/// runtime the worker hands its other tasks to another thread first. Cache hits never get here.
fn off_workers<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// What a requested file name refers to.
#[derive(Debug)]
pub(crate) enum Target<'a> {
    /// A per-device file of a known device (of a model that requests this name).
    Device {
        mac: Mac,
        model: &'a Model,
        spec: &'a FileSpec,
    },
    /// A well-formed per-device name whose MAC is not provisioned (or not for a model that
    /// requests this name).
    Unknown(Mac),
    /// A common file of a model.
    Common {
        model: &'a Model,
        spec: &'a FileSpec,
    },
}

/// Resolves a requested file name against the catalogue: common names first (Polycom's
/// `000000000000.cfg` would otherwise read as a MAC), then per-device patterns. Among common
/// files several models may share a name: the User-Agent's model wins, else the first by id.
pub(crate) fn resolve<'a>(
    catalog: &'a Catalog,
    state: &State,
    name: &'a str,
    ua_model: Option<&str>,
) -> Option<Target<'a>> {
    if !crate::catalog::valid_file_name(name) {
        return None;
    }
    // A known device of a model requesting this name: its file of lowest index if several
    // patterns match; else a common file (the User-Agent's model's, else the first by id);
    // else the MAC of a per-device name as unknown.
    let mut device: Option<(usize, Target<'a>)> = None;
    let mut unknown = None;
    for (mac, files) in catalog.mac_files(name) {
        let found = state
            .devices
            .get(&mac)
            .and_then(|d| files.of_model(&d.model));
        match found {
            Some((i, model, spec)) if device.as_ref().is_none_or(|(j, _)| i < *j) => {
                device = Some((i, Target::Device { mac, model, spec }));
            }
            Some(_) => {}
            None => unknown = Some(mac),
        }
    }
    if let Some((_, d)) = device {
        return Some(d);
    }
    let mut common = None;
    for (model, spec) in catalog.common_files(name) {
        if common.is_none() || Some(model.id.as_str()) == ua_model {
            common = Some(Target::Common { model, spec });
        }
    }
    common.or(unknown.map(Target::Unknown))
}

/// Default bound of the render cache, in bytes of rendered files (`[render] cache_mb`).
const DEFAULT_CACHE_BYTES: u64 = 64 << 20;

/// The share of the render cache [`Renderer::render_ahead`] fills, at most (numerator,
/// denominator): the rest stays free for what phones fetch meanwhile and for common files.
const AHEAD_SHARE: (u64, u64) = (3, 4);

/// What [`Renderer::render_ahead`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ahead {
    /// Devices gone through.
    pub devices: usize,
    /// Files rendered into the cache.
    pub files: usize,
    /// Files that failed to render.
    pub failed: usize,
    /// Stopped because the cache reached its share (devices were left to their fetches).
    pub full: bool,
}

/// (device, or None for a common file; hash of (model, file pattern)): no allocation per lookup.
type CacheKey = (Option<Mac>, u64);

/// (revision, engine generation, file): files are shared, a hit is a reference count.
type CacheEntry = (u64, u64, Arc<Rendered>);

/// The cache key of a device's file.
fn device_key(device: &Device, model: &Model, spec: &FileSpec) -> CacheKey {
    (Some(device.mac.clone()), file_key(&model.id, &spec.pattern))
}

fn file_key(model: &str, pattern: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (model, pattern).hash(&mut h);
    h.finish()
}

/// Weighs a cached file by its bytes (plus its bookkeeping), so the bound is one of memory.
#[derive(Clone)]
struct ByBytes;

impl quick_cache::Weighter<CacheKey, CacheEntry> for ByBytes {
    fn weight(&self, _: &CacheKey, v: &CacheEntry) -> u64 {
        v.2.bytes.len() as u64 + 256
    }
}

pub struct Renderer {
    catalog: Arc<Catalog>,
    limits: limits::Limits,
    base_url: String,
    engine: RwLock<Arc<Engine>>,
    /// Bounded by bytes; evicts the files fetched least often and least recently (S3-FIFO),
    /// so a boot storm over more devices than fit does not flush the files fetched again.
    cache: quick_cache::sync::Cache<CacheKey, CacheEntry, ByBytes>,
    metrics: crate::metrics::RenderMetrics,
}

impl Renderer {
    /// A renderer with the default cache bound.
    pub fn new(
        catalog: Arc<Catalog>,
        base_url: String,
        overrides: &[TemplateOverride],
    ) -> Renderer {
        Self::with_cache(catalog, base_url, overrides, DEFAULT_CACHE_BYTES)
    }

    /// A renderer whose cache holds at most `cache_bytes` of rendered files.
    pub(crate) fn with_cache(
        catalog: Arc<Catalog>,
        base_url: String,
        overrides: &[TemplateOverride],
        cache_bytes: u64,
    ) -> Renderer {
        Self::with_limits(
            catalog,
            base_url,
            overrides,
            cache_bytes,
            limits::Limits::default(),
        )
    }

    /// A renderer whose renders stop at `limits` (`[render] template_time_ms`, `template_max_bytes`).
    pub(crate) fn with_limits(
        catalog: Arc<Catalog>,
        base_url: String,
        overrides: &[TemplateOverride],
        cache_bytes: u64,
        limits: limits::Limits,
    ) -> Renderer {
        let engine = Engine::build(&catalog, overrides, None, 1, limits).unwrap_or_else(|e| {
            // A stored override was valid when uploaded; if the catalogue changed under it,
            // serve the built-ins rather than nothing.
            tracing::error!(error = %e, "an uploaded template no longer parses; serving built-in templates");
            Engine::build(&catalog, &[], None, 1, limits).expect("built-in templates parse")
        });
        Renderer {
            catalog,
            limits,
            base_url,
            engine: RwLock::new(Arc::new(engine)),
            // Files are a few KiB: the item estimate only sizes the shards' first tables.
            cache: quick_cache::sync::Cache::with_weighter(
                (cache_bytes / 4096).max(64) as usize,
                cache_bytes,
                ByBytes,
            ),
            metrics: Default::default(),
        }
    }

    /// Render latency and cache counts (registered by `App`'s metrics).
    pub(crate) fn metrics(&self) -> &crate::metrics::RenderMetrics {
        &self.metrics
    }

    /// The phone listener's base URL (`[phones] base_url`, else `https://<host>:<port>`).
    pub(crate) fn base_url(&self) -> &str {
        &self.base_url
    }
    pub(crate) fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub(crate) fn engine(&self) -> Arc<Engine> {
        self.engine
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Rebuilds the engine from the stored overrides (after a template change).
    pub(crate) fn reload(&self, overrides: &[TemplateOverride]) -> Result<(), RenderError> {
        let generation = self.engine().generation + 1;
        let engine = Engine::build(&self.catalog, overrides, None, generation, self.limits)?;
        *self.engine.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(engine);
        Ok(())
    }

    /// Renders a device's file (from the cache when the revision and templates are unchanged).
    pub fn render_device(
        &self,
        state: &State,
        device: &Device,
        spec: &FileSpec,
    ) -> Result<Arc<Rendered>, RenderError> {
        let model = self.catalog.get(&device.model).ok_or_else(|| {
            DomainError::validation("model", format!("unknown model {}", device.model))
        })?;
        let engine = self.engine();
        let key = device_key(device, model, spec);
        if let Some(hit) = self.cached(&key, device.revision, engine.generation) {
            return Ok(hit);
        }
        self.render_into_cache(&engine, key, state, model, device, spec)
    }

    /// Renders a device's file that is not in the cache and caches it (off the async workers
    /// when called on one).
    fn render_into_cache(
        &self,
        engine: &Engine,
        key: CacheKey,
        state: &State,
        model: &Model,
        device: &Device,
        spec: &FileSpec,
    ) -> Result<Arc<Rendered>, RenderError> {
        let started = std::time::Instant::now();
        let ctx = context::device_context(state, model, device, &self.base_url)?;
        let text = off_workers(|| engine.render(&model.id, spec, &ctx))?;
        self.metrics.latency(started.elapsed());
        let mut r = Rendered::new(text, spec, device.revision);
        r.identity = context::primary_identity(&ctx);
        let r = Arc::new(r);
        self.store_cache(key, device.revision, engine.generation, r.clone());
        Ok(r)
    }

    /// Renders the per-device files of the devices in `state` into the cache before any phone
    /// asks for them (from start-up: phones that boot together after a power cut, which takes
    /// the server down with them, then find their files rendered, as a static server would).
    /// Goes through the devices in the order of the devices table and stops once the cache is
    /// [`AHEAD_SHARE`] full (the rest is left to the fetches, which the cache's eviction then
    /// favours), or when `stop` says so. Files already cached are left alone; a file that
    /// fails to render is counted (its fetch reports the error).
    pub fn render_ahead(&self, state: &State, stop: &dyn Fn() -> bool) -> Ahead {
        let engine = self.engine();
        let budget = self.cache.capacity() / AHEAD_SHARE.1 * AHEAD_SHARE.0;
        let mut ahead = Ahead::default();
        for device in state.devices.values() {
            if self.cache.weight() >= budget {
                ahead.full = true;
                break;
            }
            if stop() {
                break;
            }
            let Some(model) = self.catalog.get(&device.model) else {
                continue;
            };
            for spec in model.files.iter().filter(|f| f.per_device) {
                let key = device_key(device, model, spec);
                let current = self
                    .cache
                    .peek(&key)
                    .is_some_and(|(r, g, _)| r == device.revision && g == engine.generation);
                if current {
                    continue;
                }
                match self.render_into_cache(&engine, key, state, model, device, spec) {
                    Ok(_) => ahead.files += 1,
                    Err(_) => ahead.failed += 1,
                }
            }
            ahead.devices += 1;
        }
        ahead
    }

    /// Renders a model's common file (no secrets).
    pub fn render_common(
        &self,
        model: &Model,
        spec: &FileSpec,
    ) -> Result<Arc<Rendered>, RenderError> {
        let engine = self.engine();
        let key = (None, file_key(&model.id, &spec.pattern));
        if let Some(hit) = self.cached(&key, 0, engine.generation) {
            return Ok(hit);
        }
        let started = std::time::Instant::now();
        let ctx = context::common_context(model, &self.base_url);
        let text = off_workers(|| engine.render(&model.id, spec, &ctx))?;
        self.metrics.latency(started.elapsed());
        let r = Arc::new(Rendered::new(text, spec, 0));
        self.store_cache(key, 0, engine.generation, r.clone());
        Ok(r)
    }

    /// Forgets every cached file (a group re-sync rebuilds from scratch).
    pub fn clear_cache(&self) {
        self.cache.clear();
    }

    fn cached(&self, key: &CacheKey, revision: u64, generation: u64) -> Option<Arc<Rendered>> {
        let hit = self
            .cache
            .get(key)
            .filter(|(r, g, _)| *r == revision && *g == generation)
            .map(|(_, _, x)| x);
        self.metrics.cache(hit.is_some());
        hit
    }

    fn store_cache(&self, key: CacheKey, revision: u64, generation: u64, r: Arc<Rendered>) {
        self.cache.insert(key, (revision, generation, r));
    }

    /// Checks a template body before it goes live: it parses, renders against a sample device
    /// and against every device of the model in `state`, and XML types give well-formed XML.
    pub(crate) fn validate(
        &self,
        state: &State,
        overrides: &[TemplateOverride],
        model: &Model,
        template: &str,
        body: &str,
    ) -> Result<usize, RenderError> {
        let engine = Engine::build(
            &self.catalog,
            overrides,
            Some((&model.id, template, body)),
            0,
            self.limits,
        )?;
        let specs: Vec<&FileSpec> = model
            .files
            .iter()
            .filter(|f| f.template == template)
            .collect();
        let mut rendered = 0;
        let sample = fixtures::sample_state(&self.catalog, &model.id)?;
        let devices = sample.devices.values().map(|d| (&sample, d)).chain(
            state
                .devices
                .values()
                .filter(|d| d.model == model.id)
                .map(|d| (state, d)),
        );
        for (st, d) in devices {
            for spec in specs.iter().filter(|s| s.per_device) {
                let ctx = context::device_context(st, model, d, &self.base_url)?;
                engine.render(&model.id, spec, &ctx)?;
                rendered += 1;
            }
        }
        for spec in specs.iter().filter(|s| !s.per_device) {
            engine.render(
                &model.id,
                spec,
                &context::common_context(model, &self.base_url),
            )?;
            rendered += 1;
        }
        Ok(rendered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(t: Option<Target<'_>>) -> String {
        match t {
            None => "none".into(),
            Some(Target::Device { mac, model, spec }) => {
                format!("device {mac} {} {}", model.id, spec.pattern)
            }
            Some(Target::Unknown(mac)) => format!("unknown {mac}"),
            Some(Target::Common { model, spec }) => format!("common {} {}", model.id, spec.pattern),
        }
    }

    fn setup() -> (Catalog, State) {
        let catalog = Catalog::builtin().unwrap();
        let state = fixtures::sample_state(&catalog, "yealink-t46u").unwrap();
        (catalog, state)
    }

    #[test]
    fn a_per_device_name_resolves_to_the_file_of_the_devices_model() {
        let (c, s) = setup();
        assert_eq!(
            names(resolve(&c, &s, "000000000001.cfg", None)),
            "device 000000000001 yealink-t46u {mac}.cfg"
        );
        assert_eq!(
            names(resolve(
                &c,
                &s,
                "000000000001.boot",
                Some("polycom-vvx-450")
            )),
            "device 000000000001 yealink-t46u {mac}.boot"
        );
        // The MAC's hex digits in either case name the same device.
        assert_eq!(
            names(resolve(&c, &s, "00000000000A.cfg", None)),
            "unknown 00000000000a"
        );
    }

    #[test]
    fn a_name_of_an_unprovisioned_mac_or_of_a_file_its_model_does_not_request_is_unknown() {
        let (c, s) = setup();
        assert_eq!(
            names(resolve(&c, &s, "0004f2000009.cfg", None)),
            "unknown 0004f2000009"
        );
        // Polycom's per-device name: the Yealink device does not request it.
        assert_eq!(
            names(resolve(&c, &s, "000000000001-deskprov.cfg", None)),
            "unknown 000000000001"
        );
        assert_eq!(names(resolve(&c, &s, "000000000001.txt", None)), "none");
        assert_eq!(names(resolve(&c, &s, "../000000000001.cfg", None)), "none");
    }

    #[test]
    fn a_common_name_beats_its_reading_as_a_mac_and_the_user_agents_model_wins_among_sharers() {
        let (c, s) = setup();
        assert_eq!(
            names(resolve(&c, &s, "000000000000.cfg", None)),
            "common polycom-edge-e350 000000000000.cfg"
        );
        assert_eq!(
            names(resolve(&c, &s, "000000000000.cfg", Some("polycom-vvx-450"))),
            "common polycom-vvx-450 000000000000.cfg"
        );
        assert_eq!(
            names(resolve(&c, &s, "y000000000108.cfg", None)),
            "common yealink-t46u y000000000108.cfg"
        );
    }

    /// The sample state with its device copied under `n` MACs.
    fn fleet(n: u64) -> (Arc<Catalog>, State) {
        let (c, mut s) = setup();
        let d = s.devices.values().next().unwrap().clone();
        s.devices = (1..=n)
            .map(|i| {
                let mut d = d.clone();
                d.mac = Mac::parse(&format!("{i:012x}")).unwrap();
                (d.mac.clone(), d)
            })
            .collect();
        (Arc::new(c), s)
    }

    #[test]
    fn files_rendered_ahead_are_served_from_the_cache() {
        let (c, s) = fleet(5);
        let r = Renderer::new(c.clone(), "https://prov.example.net".into(), &[]);
        let a = r.render_ahead(&s, &|| false);
        let per_device = c
            .get("yealink-t46u")
            .unwrap()
            .files
            .iter()
            .filter(|f| f.per_device)
            .count();
        assert_eq!(
            a,
            Ahead {
                devices: 5,
                files: 5 * per_device,
                failed: 0,
                full: false
            }
        );
        let d = s.devices.values().last().unwrap();
        let spec = c.get("yealink-t46u").unwrap().main_file().unwrap();
        let first = r.render_device(&s, d, spec).unwrap();
        let again = r.render_device(&s, d, spec).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "a cache hit shares the file");
        let hits = r.metrics().cache_counts();
        assert_eq!(
            hits,
            (2, 0),
            "both fetches were hits, nothing rendered at fetch time"
        );
    }

    #[test]
    fn rendering_ahead_again_renders_nothing_already_cached() {
        let (c, s) = fleet(3);
        let r = Renderer::new(c, "https://prov.example.net".into(), &[]);
        r.render_ahead(&s, &|| false);
        let a = r.render_ahead(&s, &|| false);
        assert_eq!((a.devices, a.files), (3, 0));
    }

    #[test]
    fn rendering_ahead_stops_at_its_share_of_the_cache() {
        let (c, s) = fleet(200);
        // Room for a few dozen devices' files.
        let r = Renderer::with_cache(c, "https://prov.example.net".into(), &[], 64 << 10);
        let a = r.render_ahead(&s, &|| false);
        assert!(a.full, "{a:?}");
        assert!(a.devices > 0 && a.devices < 200, "{a:?}");
        // The cache's shards fill unevenly (a few files each here): some may have evicted, but
        // it stopped only once its share of the whole was full.
        assert!(
            r.cache.weight() >= r.cache.capacity() / 4 * 3,
            "it went on until its share was full"
        );
    }

    #[test]
    fn rendering_ahead_stops_when_asked() {
        let (c, s) = fleet(10);
        let r = Renderer::new(c, "https://prov.example.net".into(), &[]);
        let seen = std::sync::atomic::AtomicUsize::new(0);
        let a = r.render_ahead(&s, &|| {
            seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= 4
        });
        assert_eq!(a.devices, 4);
    }
}
