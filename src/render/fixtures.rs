//! Golden fixtures: `fixtures/<model-id>/<scenario>/input.json` plus the exact expected files.
//!
//! The input describes a group with its users, devices, SCA endpoints, shared lines and an
//! optional hot-desk login, applied through the domain rules (so a fixture can never hold a
//! state the API would refuse), with deterministic secrets. Every file the device's model
//! requests is rendered and compared byte for byte; beside that, semantic checks that do not
//! drift with formatting: XML parses, key=value parses, every shared appearance carries the
//! vendor's shared flag and a line key pointing at it (`[checks]` in model.toml), and no common
//! file contains a password.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{context, flatten, Engine, RenderError};
use crate::catalog::Catalog;
use crate::domain::layout::{layout, AppearanceKind};
use crate::domain::rules::{self, DeviceInput, ScaInput, SharedLineInput, UserInput};
use crate::domain::state::{State, Tx};
use crate::domain::*;

/// The base URL fixtures render with.
pub const BASE_URL: &str = "https://prov.example.net:8443";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureInput {
    /// What the scenario shows (for humans). Never read by code, but declared so that
    /// `deny_unknown_fields` accepts it in fixture files.
    #[expect(
        dead_code,
        reason = "documentation field of fixture files, parsed and ignored"
    )]
    #[serde(default)]
    pub(crate) description: String,
    /// The device under test.
    pub(crate) device: Mac,
    pub(crate) group: Group,
    #[serde(default)]
    pub(crate) users: Vec<UserInput>,
    #[serde(default)]
    pub(crate) devices: Vec<DeviceInput>,
    #[serde(default)]
    pub(crate) sca: Vec<FixtureSca>,
    #[serde(default)]
    pub(crate) shared_lines: Vec<SharedLineInput>,
    #[serde(default)]
    pub(crate) hot_desk: Option<FixtureHotDesk>,
    /// A firmware image of the device's model and the group's target for it.
    #[serde(default)]
    pub(crate) firmware: Option<FixtureFirmware>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureFirmware {
    pub(crate) version: String,
    pub(crate) sha256: String,
    pub(crate) size: u64,
    #[serde(default)]
    pub(crate) percent: Option<u8>,
    #[serde(default)]
    pub(crate) pilots: Vec<Mac>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureSca {
    /// Whose line is shared.
    pub(crate) extension: Extension,
    #[serde(flatten)]
    pub(crate) endpoint: ScaInput,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureHotDesk {
    pub(crate) mac: Mac,
    pub(crate) extension: Extension,
}

/// Deterministic secrets, so rendered files are stable.
struct FixtureEnv<'a> {
    catalog: &'a Catalog,
    n: Cell<u32>,
}

impl Env for FixtureEnv<'_> {
    fn device_caps(
        &self,
        model: &str,
        modules: &[ExpansionModule],
    ) -> Option<Result<ModelCaps, DomainError>> {
        self.catalog.device_caps(model, modules)
    }
    fn max_sca_per_user(&self) -> usize {
        35
    }
    fn new_secret(&self) -> String {
        self.n.set(self.n.get() + 1);
        format!("fixture-secret-{:04}", self.n.get())
    }
    fn random_id(&self) -> [u8; 5] {
        self.n.set(self.n.get() + 1);
        let [_, a, b, c] = self.n.get().to_be_bytes();
        [0x5f, 0x00, a, b, c]
    }
}

/// Builds the state a fixture input describes.
fn build_state(catalog: &Catalog, input: &FixtureInput) -> Result<State, DomainError> {
    let env = FixtureEnv {
        catalog,
        n: Cell::new(0),
    };
    let mut state = State::default();
    let mut tx = Tx::new(&mut state);
    let g = input.group.id.clone();
    rules::create_group(&mut tx, input.group.clone())?;
    for u in &input.users {
        rules::create_user(&mut tx, &env, &g, u.clone())?;
    }
    for d in &input.devices {
        rules::create_device(&mut tx, &env, &g, d.clone())?;
    }
    for l in &input.shared_lines {
        rules::create_shared_line(&mut tx, &env, &g, l.clone())?;
    }
    for s in &input.sca {
        rules::create_sca(&mut tx, &env, &g, &s.extension, s.endpoint.clone())?;
    }
    if let Some(h) = &input.hot_desk {
        rules::hot_desk_login(&mut tx, &env, &h.mac, &h.extension)?;
    }
    if let Some(f) = &input.firmware {
        let model = tx
            .state()
            .devices
            .get(&input.device)
            .map(|d| d.model.to_string())
            .ok_or_else(|| DomainError::not_found("the fixture's device is not in devices"))?;
        let img = FirmwareImage {
            model: model.clone(),
            version: f.version.clone(),
            sha256: f.sha256.clone(),
            size: f.size,
            uploaded_at: "2026-01-01T00:00:00Z".into(),
            actor: "fixture".into(),
        };
        rules::put_firmware_image(&mut tx, &env, img)?;
        let target = rules::FirmwareTargetInput {
            version: f.version.clone(),
            percent: f.percent,
            pilots: f.pilots.clone(),
        };
        rules::set_firmware_target(
            &mut tx,
            &env,
            &g,
            &model,
            target,
            "2026-01-01T00:00:00Z".into(),
        )?;
    }
    drop(tx);
    Ok(state)
}

/// A small valid state with one device of `model` (primary, an SCA, a shared line, a BLF key),
/// whose names carry every character that breaks careless templates: `--` (ends an XML
/// comment), `&`, `<`, quotes — also in the group id, hence in line ports. Template uploads are
/// validated against it, and the fixture check renders every model's files for it.
pub fn sample_state(catalog: &Catalog, model: &str) -> Result<State, DomainError> {
    // Scaled to the model: a two-key, two-account phone gets the primary line and the SCA;
    // the shared line and the speed dial come where there is room for them.
    let (keys, accounts) = catalog
        .get(model)
        .map_or((6, 3), |m| (m.line_keys, m.accounts));
    let lines = keys.min(accounts).min(3);
    // A softphone's id is a locally administered address, never a vendor MAC.
    let soft = catalog
        .get(model)
        .is_some_and(|m| m.kind == EndpointKind::Softphone);
    let id = if soft { "020000000001" } else { "000000000001" };
    let mut device = serde_json::json!({"mac": id, "name": "Desk -- A&B <x> \"q\"", "model": model, "owner": "1001"});
    if keys > lines {
        device["keys"] = serde_json::json!([{"key": keys.min(6), "type": "speed_dial", "value": "*68", "label": "Park -- & <here>"}]);
    }
    let shared_lines = if lines >= 3 {
        serde_json::json!([{"number": "555", "description": "Sales -- & <team>", "members": [{"extension": "1001", "ring": "delayed"}]}])
    } else {
        serde_json::json!([])
    };
    let sca = if lines >= 2 {
        serde_json::json!([{"extension": "1002", "device": id, "label": "Boss -- 'x' & y"}])
    } else {
        serde_json::json!([])
    };
    let input: FixtureInput = serde_json::from_value(serde_json::json!({
        "device": id,
        "group": {"id": "sample--1", "name": "Sample -- <group> & co", "sip": {"domain": "sip.example.net", "proxy": "proxy.example.net"},
                  "settings": {"timezone": "UTC", "ntp": "pool.ntp.org", "note": "a -- b & <c> \"d\" 'e'"}},
        "users": [
            {"extension": "1002", "first_name": "Sam & <Co>", "last_name": "O'Neil \"--\""},
            {"extension": "1001", "first_name": "Ann -- B", "last_name": "<Owner> & 'x'", "phone_number": "6035550100",
             "features": {"monitoring": ["1002"], "voicemail": {"enabled": true, "access_number": "*97"}}}
        ],
        "devices": [device],
        "shared_lines": shared_lines,
        "sca": sca,
        "firmware": {"version": "1.0-rc.1", "sha256": "00".repeat(32), "size": 1}
    }))
    .map_err(|e| DomainError::validation("fixture", e.to_string()))?;
    build_state(catalog, &input)
}

/// Renders every file of `model` for the hostile sample device; returns the problems.
fn check_sample(catalog: &Catalog, engine: &Engine, model: &crate::catalog::Model) -> Vec<String> {
    let state = match sample_state(catalog, &model.id) {
        Ok(s) => s,
        Err(e) => return vec![format!("model {}: sample device: {e}", model.id)],
    };
    let Some(device) = state.devices.values().next() else {
        return vec![];
    };
    let mut problems = Vec::new();
    let ctx = match context::device_context(&state, model, device, BASE_URL) {
        Ok(c) => c,
        Err(e) => return vec![format!("model {}: {e}", model.id)],
    };
    for spec in &model.files {
        let c = if spec.per_device {
            ctx.clone()
        } else {
            context::common_context(model, BASE_URL)
        };
        match engine.render(&model.id, spec, &c) {
            Ok(text) => {
                if let Err(e) = flatten::flatten(&spec.content_type, &text) {
                    problems.push(format!("model {}: {} does not parse for a device with special characters in its names: {e}", model.id, spec.pattern));
                }
            }
            Err(e) => problems.push(format!(
                "model {}: {} fails for a device with special characters in its names: {e}",
                model.id, spec.pattern
            )),
        }
    }
    problems
}

/// What rendering one scenario produced: file name → bytes, and the problems found.
struct ScenarioResult {
    pub(crate) files: BTreeMap<String, String>,
    problems: Vec<String>,
}

/// Renders a scenario with `engine` and runs the semantic checks.
fn render_scenario(
    catalog: &Catalog,
    engine: &Engine,
    input: &FixtureInput,
) -> Result<ScenarioResult, String> {
    let state = build_state(catalog, input).map_err(|e| format!("input: {e}"))?;
    let device = state
        .devices
        .get(&input.device)
        .ok_or_else(|| format!("input: device {} is not in devices", input.device))?;
    let model = catalog
        .get(&device.model)
        .ok_or_else(|| format!("unknown model {}", device.model))?;
    let mut files = BTreeMap::new();
    let mut problems = Vec::new();
    let ctx =
        context::device_context(&state, model, device, BASE_URL).map_err(|e| e.to_string())?;
    let passwords: Vec<String> = ctx["lines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["password"].as_str().map(str::to_string))
        .collect();
    for spec in &model.files {
        let name = spec.name_for(&device.mac, model.mac_case);
        let out = if spec.per_device {
            engine.render(&model.id, spec, &ctx)
        } else {
            engine.render(&model.id, spec, &context::common_context(model, BASE_URL))
        };
        match out {
            Ok(text) => {
                if let Err(e) = flatten::flatten(&spec.content_type, &text) {
                    problems.push(format!("{name}: does not parse: {e}"));
                }
                if !spec.per_device {
                    for p in &passwords {
                        if text.contains(p.as_str()) {
                            problems.push(format!("{name}: a common file contains a password"));
                        }
                    }
                }
                files.insert(name, text);
            }
            Err(e) => problems.push(format!("{name}: {e}")),
        }
    }
    // The bytes must not depend on the revision, or the same-hash check could never skip;
    // except the lines the model declares in `[checks] revision_lines`, which must then change.
    let mut bumped = device.clone();
    bumped.revision += 1;
    let marked = |l: &str| {
        model
            .checks
            .revision_lines
            .iter()
            .any(|m| l.contains(m.as_str()))
    };
    let unmarked = |t: &str| -> String {
        t.lines()
            .filter(|l| !marked(l))
            .collect::<Vec<_>>()
            .join("\n")
    };
    if let Ok(ctx2) = context::device_context(&state, model, &bumped, BASE_URL) {
        for spec in model.files.iter().filter(|f| f.per_device) {
            let name = spec.name_for(&device.mac, model.mac_case);
            if let (Some(a), Ok(b)) = (files.get(&name), engine.render(&model.id, spec, &ctx2)) {
                if unmarked(a) != unmarked(&b) {
                    problems.push(format!("{name}: the bytes change with the revision (do not render server.revision outside [checks] revision_lines)"));
                } else if a.lines().any(marked) && *a == b {
                    problems.push(format!(
                        "{name}: the [checks] revision_lines do not change with the revision"
                    ));
                }
            }
        }
    }
    // Shared appearances: the vendor's shared flag, and a line key pointing at the registration.
    if let Some(main) = model.main_file() {
        let name = main.name_for(&device.mac, model.mac_case);
        if let Some(text) = files.get(&name) {
            let facts = flatten::flatten(&main.content_type, text).unwrap_or_default();
            let caps = model
                .device_caps(&device.expansion_modules)
                .map_err(|e| e.to_string())?;
            let lay = layout(&state, device, caps).map_err(|e| e.to_string())?;
            for a in lay
                .appearances
                .iter()
                .filter(|a| a.kind != AppearanceKind::Primary)
            {
                let index = a.index.to_string();
                let index0 = (a.index - 1).to_string();
                for fact in &model.checks.shared {
                    let f = fact.replace("{index}", &index).replace("{index0}", &index0);
                    if !flatten::holds(&facts, &f) {
                        problems.push(format!(
                            "{name}: shared appearance {}: '{f}' does not hold",
                            a.line_port
                        ));
                    }
                }
                for key in &a.keys {
                    let (module, position) = key_slot(&ctx, a.index, *key);
                    for fact in line_key_checks(&model.checks.line_key, module) {
                        let f = fact
                            .replace("{index}", &index)
                            .replace("{index0}", &index0)
                            .replace("{key}", &key.to_string())
                            .replace("{key0}", &(key - 1).to_string())
                            .replace("{module}", &module.to_string())
                            .replace("{position}", &position.to_string());
                        if !flatten::holds(&facts, &f) {
                            problems.push(format!(
                                "{name}: line key {key} of {}: '{f}' does not hold",
                                a.line_port
                            ));
                        }
                    }
                }
            }
            problems.extend(disabled_problems(engine, model, main, &ctx, &facts, &name));
            // A softphone lists its accounts: it has no line keys to check.
            let keyless = model.kind == EndpointKind::Softphone;
            if model.checks.shared.is_empty()
                || (model.checks.line_key.is_empty() && !keyless)
                || model.checks.disabled.is_empty()
            {
                problems.push(format!(
                    "model {}: [checks] shared, line_key (but for a softphone) and disabled must be declared",
                    model.id
                ));
            }
        }
    }
    Ok(ScenarioResult { files, problems })
}

/// `[checks] disabled`: rendered with every line's `enabled` false, each fact holds for every
/// registration; in the file as rendered (lines enabled), none does.
fn disabled_problems(
    engine: &Engine,
    model: &crate::catalog::Model,
    main: &crate::catalog::FileSpec,
    ctx: &serde_json::Value,
    enabled: &flatten::Facts,
    name: &str,
) -> Vec<String> {
    let mut off = ctx.clone();
    for line in off["lines"].as_array_mut().into_iter().flatten() {
        line["enabled"] = serde_json::Value::Bool(false);
    }
    let disabled = match engine
        .render(&model.id, main, &off)
        .map_err(|e| e.to_string())
        .and_then(|t| flatten::flatten(&main.content_type, &t).map_err(|e| e.to_string()))
    {
        Ok(f) => f,
        Err(e) => return vec![format!("{name} with its lines disabled: {e}")],
    };
    let mut problems = Vec::new();
    let indexes = ctx["lines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["index"].as_u64());
    for index in indexes {
        for fact in &model.checks.disabled {
            let f = fact
                .replace("{index}", &index.to_string())
                .replace("{index0}", &(index - 1).to_string());
            if !flatten::holds(&disabled, &f) {
                problems.push(format!(
                    "{name}: registration {index} disabled: '{f}' does not hold"
                ));
            }
            if flatten::holds(enabled, &f) {
                problems.push(format!("{name}: registration {index} enabled: '{f}' holds"));
            }
        }
    }
    problems
}

/// Where line key `key` of registration `index` sits, from the context's `key_slots`:
/// (`module`, `position`), module 0 being the phone itself.
fn key_slot(ctx: &serde_json::Value, index: u16, key: KeyNo) -> (u64, u64) {
    ctx["lines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["index"].as_u64() == Some(u64::from(index)))
        .flat_map(|l| l["key_slots"].as_array().into_iter().flatten())
        .find(|s| s["key"].as_u64() == Some(u64::from(key)))
        .and_then(|s| Some((s["module"].as_u64()?, s["position"].as_u64()?)))
        .unwrap_or((0, u64::from(key)))
}

/// The `[checks] line_key` facts for a key on `module` (0: the phone). Facts naming
/// `{module}` or `{position}` describe sidecar keys: they apply to keys on a module only, and
/// the others to keys on the phone only; a model without such facts numbers its sidecar keys
/// like its own, so all its facts apply everywhere.
fn line_key_checks(checks: &[String], module: u64) -> impl Iterator<Item = &String> {
    let sidecar = |f: &String| f.contains("{module}") || f.contains("{position}");
    let any_sidecar = checks.iter().any(sidecar);
    checks.iter().filter(move |f| match (module, any_sidecar) {
        (0, _) => !sidecar(f),
        (_, true) => sidecar(f),
        (_, false) => true,
    })
}

/// A short line diff: the first differing lines with their numbers.
fn diff(expected: &str, got: &str) -> String {
    let (e, g): (Vec<_>, Vec<_>) = (expected.lines().collect(), got.lines().collect());
    let mut out = String::new();
    let mut shown = 0;
    for i in 0..e.len().max(g.len()) {
        let (a, b) = (e.get(i), g.get(i));
        if a != b {
            out.push_str(&format!(
                "  line {}:\n    - {}\n    + {}\n",
                i + 1,
                a.unwrap_or(&"<none>"),
                b.unwrap_or(&"<none>")
            ));
            shown += 1;
            if shown == 8 {
                out.push_str("  ...\n");
                break;
            }
        }
    }
    out
}

/// Renders every fixture under `root` and compares (or, with `update`, rewrites) the expected
/// files. Returns the number of scenarios and every problem found.
pub fn check_all(
    catalog: &Catalog,
    root: &Path,
    update: bool,
    only: Option<&str>,
) -> Result<(usize, Vec<String>), String> {
    let engine = Engine::build(catalog, &[], None, 0, super::limits::Limits::default())
        .map_err(|e: RenderError| e.to_string())?;
    let mut problems = Vec::new();
    let mut count = 0;
    let mut models_seen = Vec::new();
    let mut model_dirs: Vec<_> = std::fs::read_dir(root)
        .map_err(|e| format!("{}: {e}", root.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .collect();
    model_dirs.sort_by_key(|e| e.file_name());
    for m in model_dirs {
        let model_id = m.file_name().to_string_lossy().to_string();
        if only.is_some_and(|o| o != model_id) {
            continue;
        }
        if catalog.get(&model_id).is_none() {
            problems.push(format!("fixtures/{model_id}: no such model"));
            continue;
        }
        models_seen.push(model_id.clone());
        let mut scenarios: Vec<_> = std::fs::read_dir(m.path())
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .collect();
        scenarios.sort_by_key(|e| e.file_name());
        for sc in scenarios {
            count += 1;
            let dir = sc.path();
            let label = format!("{model_id}/{}", sc.file_name().to_string_lossy());
            let input: FixtureInput = match std::fs::read_to_string(dir.join("input.json"))
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
            {
                Ok(i) => i,
                Err(e) => {
                    problems.push(format!("{label}/input.json: {e}"));
                    continue;
                }
            };
            let result = match render_scenario(catalog, &engine, &input) {
                Ok(r) => r,
                Err(e) => {
                    problems.push(format!("{label}: {e}"));
                    continue;
                }
            };
            if let Some(d) = catalog.get(&model_id) {
                let device_model = build_state(catalog, &input)
                    .ok()
                    .and_then(|s| s.devices.get(&input.device).map(|x| x.model.clone()));
                if device_model.as_deref() != Some(d.id.as_str()) {
                    problems.push(format!(
                        "{label}: the device under test is not a {model_id}"
                    ));
                }
            }
            problems.extend(result.problems.iter().map(|p| format!("{label}: {p}")));
            for (name, text) in &result.files {
                let path = dir.join(name);
                if update {
                    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
                    continue;
                }
                match std::fs::read_to_string(&path) {
                    Ok(expected) if &expected == text => {}
                    Ok(expected) => problems.push(format!(
                        "{label}/{name} differs:\n{}",
                        diff(&expected, text)
                    )),
                    Err(_) => problems.push(format!(
                        "{label}/{name} is missing (run with UPDATE_FIXTURES=1 and review)"
                    )),
                }
            }
            // Files in the scenario that the model no longer renders are stale.
            for e in std::fs::read_dir(&dir)
                .map_err(|e| e.to_string())?
                .filter_map(Result::ok)
            {
                let n = e.file_name().to_string_lossy().to_string();
                if n != "input.json" && !result.files.contains_key(&n) {
                    problems.push(format!("{label}/{n} is not a file this model renders"));
                }
            }
        }
    }
    for m in catalog.models().filter(|m| only.is_none_or(|o| o == m.id)) {
        problems.extend(check_sample(catalog, &engine, m));
        if m.files.is_empty() {
            problems.push(format!("model {} declares no files", m.id));
        } else if !models_seen.contains(&m.id) {
            problems.push(format!("model {} has no fixtures", m.id));
        }
    }
    Ok((count, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The main file of fixture `fixtures/<model>/<scenario>` rendered with its context changed
    /// by `edit`, as facts; and the line keys of registration 2.
    fn main_facts(
        model: &str,
        scenario: &str,
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> (flatten::Facts, Vec<u64>) {
        let catalog = Catalog::builtin().unwrap();
        let engine = Engine::build(
            &catalog,
            &[],
            None,
            0,
            super::super::limits::Limits::default(),
        )
        .unwrap();
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(model)
            .join(scenario)
            .join("input.json");
        let input: FixtureInput =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let state = build_state(&catalog, &input).unwrap();
        let device = state.devices.get(&input.device).unwrap();
        let m = catalog.get(&device.model).unwrap();
        let mut ctx = context::device_context(&state, m, device, BASE_URL).unwrap();
        edit(&mut ctx);
        let keys = ctx["lines"][1]["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(serde_json::Value::as_u64)
            .collect();
        let spec = m.main_file().unwrap();
        let text = engine.render(&m.id, spec, &ctx).unwrap();
        (flatten::flatten(&spec.content_type, &text).unwrap(), keys)
    }

    fn disable_line_2(ctx: &mut serde_json::Value) {
        ctx["lines"][1]["enabled"] = serde_json::Value::Bool(false);
    }

    #[test]
    fn a_disabled_yealink_line_is_a_disabled_account_that_keeps_its_key() {
        let (facts, keys) = main_facts("yealink-t46u", "b-sca", disable_line_2);
        assert!(flatten::holds(&facts, "account.2.enable = 0"));
        assert!(flatten::holds(&facts, "account.1.enable = 1"));
        assert!(!keys.is_empty());
        for k in keys {
            assert!(flatten::holds(&facts, &format!("linekey.{k}.line = 2")));
        }
    }

    #[test]
    fn a_disabled_polycom_line_does_not_register_and_keeps_its_key() {
        let (facts, keys) = main_facts("polycom-vvx-450", "b-sca", disable_line_2);
        assert!(flatten::holds(&facts, "reg.2.server.1.register = 0"));
        assert!(flatten::holds(&facts, "reg.1.server.1.register = 1"));
        assert!(!keys.is_empty());
        for k in keys {
            assert!(flatten::holds(&facts, &format!("lineKey.{k}.index = 2")));
        }
    }

    #[test]
    fn sidecar_facts_apply_to_sidecar_keys_only() {
        let checks: Vec<String> = ["linekey.{key}.type = 15", "m.{module}.key.{position} = 15"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            line_key_checks(&checks, 0).collect::<Vec<_>>(),
            [&checks[0]]
        );
        assert_eq!(
            line_key_checks(&checks, 2).collect::<Vec<_>>(),
            [&checks[1]]
        );
        let global = &checks[..1];
        assert_eq!(
            line_key_checks(global, 1).count(),
            1,
            "no sidecar facts: all apply"
        );
    }

    /// Renders `model`'s main file for the sample device with every line's `enabled` forced to
    /// false (nothing sets it false yet: login_allowed will) and returns its facts.
    fn disabled_facts(model: &str) -> flatten::Facts {
        let catalog = Catalog::builtin().unwrap();
        let engine = Engine::build(
            &catalog,
            &[],
            None,
            0,
            super::super::limits::Limits::default(),
        )
        .unwrap();
        let m = catalog.get(model).unwrap();
        let state = sample_state(&catalog, model).unwrap();
        let device = state.devices.values().next().unwrap();
        let mut ctx = context::device_context(&state, m, device, BASE_URL).unwrap();
        for line in ctx["lines"].as_array_mut().unwrap() {
            line["enabled"] = serde_json::Value::Bool(false);
        }
        let main = m.main_file().unwrap();
        let text = engine.render(model, main, &ctx).unwrap();
        flatten::flatten(&main.content_type, &text).unwrap()
    }

    #[test]
    fn a_disabled_snom_fanvil_or_mitel_line_is_the_vendors_account_off_and_keeps_its_key() {
        let f = disabled_facts("snom-d785");
        assert!(flatten::holds(&f, "user_active[1] = off"));
        assert!(flatten::holds(&f, "fkey[0] = line"), "the key stays");
        let f = disabled_facts("fanvil-x6u");
        assert!(flatten::holds(&f, "line[1]/EnableReg = 0"));
        assert!(flatten::holds(&f, "dssSide[1]/Fkey[1]/Value = SIP1"));
        let f = disabled_facts("mitel-6867i");
        assert!(flatten::holds(&f, "sip line1 registrar ip = 0.0.0.0"));
        assert!(flatten::holds(&f, "topsoftkey1 type = line"));
    }
}
