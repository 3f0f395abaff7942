//! The model catalogue: `device-templates/<model-id>/model.toml`, data only.
//!
//! The built-in folder is embedded in the binary (so `deskprov serve` works from any directory);
//! `templates_dir` may add models or override built-in ones folder by folder. A model id is its
//! folder name.
//!
//! Templates live once per family, in `_families/<family>/*.tera` (the model's `family` names the
//! folder); a model folder normally holds only its `model.toml`, and what differs between models
//! of a family is model data (`[vars]`, exposed to templates as `model.vars.*`). A `.tera` file in
//! a model folder overrides the family's file of the same name. `templates_dir` may hold
//! `_families/` too: its files override the built-in family files of the same name, for every
//! model of that family.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use include_dir::{include_dir, Dir};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use std::sync::Arc;

use crate::domain::{
    ChangeKind, DomainError, EndpointKind, Env, ExpansionModule, KeyNo, ModelCaps,
};

static BUILTIN: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/device-templates");

/// The folder (beside the model folders) that holds one template folder per family.
const FAMILIES_DIR: &str = "_families";

/// The folder (beside the model folders) that holds one `<module-id>.toml` per expansion module.
const MODULES_DIR: &str = "_modules";

/// A family's vendor names for time zones and languages: `_families/<family>/locale.toml`.
const LOCALE_FILE: &str = "locale.toml";

/// Template sources by file name.
type Templates = BTreeMap<String, String>;

/// Case of the MAC in file names a model requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MacCase {
    Lower,
    Upper,
}

/// SIP NOTIFY events a model understands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Notify {
    /// `Event:` that makes the phone re-fetch its files.
    pub(crate) resync: String,
    /// `Event:` that makes the phone reboot.
    pub(crate) reboot: String,
    /// Change kinds that need a reboot rather than a re-sync: `lines` (registrations or
    /// appearances changed), `keys`, `settings`, `template`. Default: `lines`. An unknown name
    /// fails the model's loading with the list of valid ones.
    #[serde(default = "default_reboot_on")]
    pub(crate) reboot_on: Vec<ChangeKind>,
}

fn default_sip_port() -> u16 {
    5060
}

fn default_reboot_on() -> Vec<ChangeKind> {
    vec![ChangeKind::Lines]
}

/// One file a model requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// The requested name; `{mac}` stands for the MAC in the model's case.
    pub pattern: String,
    /// Template file: the model folder's own, else its family's (`_families/<family>/`).
    pub template: String,
    pub(crate) content_type: String,
    /// Rendered per device (may hold secrets, needs device auth) or common to the model.
    pub per_device: bool,
    /// The device's main file: fetching it marks the revision as applied. Default: the first
    /// per-device file.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) main: bool,
}

impl FileSpec {
    /// Whether the content is XML (checked for well-formedness, values XML-escaped).
    pub fn is_xml(&self) -> bool {
        let ct = self.content_type.split(';').next().unwrap_or("").trim();
        ct.ends_with("/xml") || ct.ends_with("+xml")
    }

    /// The file name for a device (`{mac}` replaced in the model's case); a common file's
    /// name is its pattern.
    pub fn name_for(&self, mac: &crate::domain::Mac, case: MacCase) -> String {
        let m = match case {
            MacCase::Lower => mac.to_string(),
            MacCase::Upper => mac.upper(),
        };
        self.pattern.replace("{mac}", &m)
    }
}

/// How a model's phones fetch firmware images from the phone listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FirmwareAuth {
    /// The phone authenticates image downloads as it does its configuration (digest or a client
    /// certificate, by its group's policy).
    Device,
    /// The phone sends no credentials for images (a documented exception in its model.toml): the
    /// image is served to anyone naming a device of the roll-out. Images are vendor software,
    /// not secrets; the URL names the MAC and answers 404 outside the roll-out.
    None,
}

/// `[firmware]` of model.toml: what the phone requests for an upgrade and how its template names it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FirmwareSpec {
    /// The image's file name in its URL, `{version}` standing for the target version (some
    /// phones build the name themselves from a server path: Grandstream `gxp2170fw.bin`).
    pub(crate) file: String,
    pub(crate) auth: FirmwareAuth,
    /// The setting the family's template writes (for admins; e.g. `static.firmware.url`).
    pub(crate) setting: String,
}

impl FirmwareSpec {
    /// The image's file name for `version`.
    pub(crate) fn file_for(&self, version: &str) -> String {
        self.file.replace("{version}", version)
    }
}

/// Semantic checks of rendered files, run by the fixture tests: each entry is a key=value fact
/// that must hold in the main file, with `{index}` (registration) and `{key}` (line key)
/// placeholders (`{index0}` and `{key0}` for 0-based numbering). See `crate::render::flatten`
/// for how files become key=value facts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Checks {
    /// Facts that mark registration `{index}` as a shared appearance.
    #[serde(default)]
    pub(crate) shared: Vec<String>,
    /// Facts that put registration `{index}` on line key `{key}`.
    #[serde(default)]
    pub(crate) line_key: Vec<String>,
    /// Facts that switch registration `{index}` off: they hold for every line when its
    /// `enabled` is false (`login_allowed: false`, unregister) and for none otherwise.
    #[serde(default)]
    pub(crate) disabled: Vec<String>,
    /// The one declared exception to "the bytes do not depend on the revision": lines of a
    /// per-device file containing one of these strings may change with `server.revision` (Fanvil's
    /// `<Version>`, which must rise for the phone to apply a file). Such a model's files change
    /// with every revision, so the same-hash check never skips its NOTIFYs.
    #[serde(default)]
    pub(crate) revision_lines: Vec<String>,
}

/// `model.toml` as written on disk (the id is the folder name).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    vendor: String,
    family: String,
    name: String,
    line_keys: u16,
    #[serde(default)]
    accounts: Option<u16>,
    mac_case: MacCase,
    /// `ip_phone` (default) or `softphone`: a softphone has no MAC, the server assigns its id.
    #[serde(default)]
    kind: EndpointKind,
    #[serde(default)]
    user_agents: Vec<String>,
    notify: Notify,
    #[serde(default = "default_sip_port")]
    sip_port: u16,
    #[serde(default)]
    files: Vec<FileSpec>,
    #[serde(default)]
    checks: Checks,
    #[serde(default)]
    vars: BTreeMap<String, String>,
    /// Module ids (`_modules/<id>.toml`) this model takes.
    #[serde(default)]
    expansion_modules: Vec<String>,
    /// How many modules it takes in all.
    #[serde(default)]
    max_expansion_modules: u8,
    #[serde(default)]
    firmware: Option<FirmwareSpec>,
}

/// A family's own names for time zones (by IANA name) and languages (by tag `de-DE`, then
/// code `de`), as the templates get them in `timezone.vendor` and `language.vendor`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Locale {
    #[serde(default)]
    pub(crate) timezones: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) languages: BTreeMap<String, String>,
}

/// An expansion module (sidecar): `_modules/<id>.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExpansionModel {
    /// The module id: its file name. (Not `skip_deserializing`, which would drop it from the
    /// API schema too; the loader sets it from the file name, whatever the file says.)
    #[serde(default)]
    pub(crate) id: String,
    pub(crate) vendor: String,
    pub(crate) family: String,
    pub(crate) name: String,
    /// Programmable keys per module.
    pub(crate) keys: KeyNo,
    /// Whether its keys can show a line appearance (SCA, shared line). Some vendors' sidecars
    /// take only BLF, speed dial and park keys (`appearances = false`).
    #[serde(default = "yes")]
    pub(crate) appearances: bool,
    /// Free values for templates (`device.expansion_modules[].vars`).
    #[serde(default)]
    pub(crate) vars: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

/// One phone model.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct Model {
    pub id: String,
    pub(crate) vendor: String,
    /// Also the template folder `_families/<family>/`.
    pub(crate) family: String,
    pub(crate) name: String,
    pub(crate) line_keys: u16,
    pub(crate) accounts: u16,
    pub mac_case: MacCase,
    /// Desk phone (`ip_phone`) or `softphone` (no MAC: the server assigns the device's id).
    pub(crate) kind: EndpointKind,
    /// Substrings of the User-Agent that identify this model.
    pub(crate) user_agents: Vec<String>,
    pub(crate) notify: Notify,
    /// Where the phone listens for SIP (NOTIFYs to its last-seen address go here).
    pub(crate) sip_port: u16,
    pub files: Vec<FileSpec>,
    #[serde(skip)]
    pub(crate) checks: Checks,
    /// Built-in template sources by template file name: the family's, overridden by the model
    /// folder's own.
    #[serde(skip)]
    pub(crate) templates: BTreeMap<String, String>,
    /// `[vars]` of model.toml: what the family templates need to know of this model beyond the
    /// fields above (templates read `model.vars.<name>`).
    #[serde(skip)]
    pub(crate) vars: BTreeMap<String, String>,
    /// The expansion modules this model takes.
    #[schema(value_type = Vec<ExpansionModel>)]
    pub(crate) expansion_modules: Vec<Arc<ExpansionModel>>,
    /// How many expansion modules it takes in all (0: none).
    pub(crate) max_expansion_modules: u8,
    /// The family's vendor names for time zones and languages.
    #[serde(skip)]
    pub(crate) locale: Arc<Locale>,
    /// How it fetches firmware (`None`: deskprov serves it no firmware).
    pub(crate) firmware: Option<FirmwareSpec>,
}

impl Model {
    /// The key space of this model carrying `modules`: its own line keys, then each module's
    /// keys in order. Accounts are the phone's.
    pub(crate) fn device_caps(
        &self,
        modules: &[ExpansionModule],
    ) -> Result<ModelCaps, DomainError> {
        let bad = |msg: String| DomainError::validation("expansion_modules", msg);
        let mut keys = u32::from(self.line_keys);
        // Lines show on the phone's keys and on the modules up to the first that shows none.
        let mut appearance_keys = keys;
        let mut lines_on = true;
        let mut total = 0u32;
        for m in modules {
            let Some(em) = self.expansion_module(&m.model) else {
                let takes: Vec<&str> = self
                    .expansion_modules
                    .iter()
                    .map(|e| e.id.as_str())
                    .collect();
                return Err(bad(if takes.is_empty() {
                    format!("model {} takes no expansion module", self.id)
                } else {
                    format!(
                        "model {} does not take expansion module {} (it takes {})",
                        self.id,
                        m.model,
                        takes.join(", ")
                    )
                }));
            };
            if m.count == 0 {
                return Err(bad(format!("count of {} must be at least 1", m.model)));
            }
            total += u32::from(m.count);
            keys += u32::from(em.keys) * u32::from(m.count);
            lines_on &= em.appearances;
            if lines_on {
                appearance_keys = keys;
            }
        }
        if total > u32::from(self.max_expansion_modules) {
            return Err(bad(format!(
                "model {} takes at most {} expansion modules; {total} given",
                self.id, self.max_expansion_modules
            )));
        }
        let too_many = |_| bad("too many keys".into());
        Ok(ModelCaps {
            line_keys: KeyNo::try_from(keys).map_err(too_many)?,
            appearance_keys: KeyNo::try_from(appearance_keys).map_err(too_many)?,
            accounts: self.accounts,
            endpoint: self.kind,
        })
    }

    /// An expansion module this model takes, by id.
    pub(crate) fn expansion_module(&self, id: &str) -> Option<&Arc<ExpansionModel>> {
        self.expansion_modules.iter().find(|e| e.id == id)
    }

    /// The physical modules of a device in key order, one entry per module (`count` expanded).
    pub(crate) fn modules_of<'a>(
        &'a self,
        modules: &'a [ExpansionModule],
    ) -> impl Iterator<Item = &'a Arc<ExpansionModel>> + 'a {
        modules.iter().flat_map(move |m| {
            self.expansion_module(&m.model)
                .into_iter()
                .flat_map(move |e| std::iter::repeat_n(e, usize::from(m.count)))
        })
    }

    /// A softphone model (`kind = "softphone"`): its devices have server-assigned ids, not MACs.
    pub fn is_softphone(&self) -> bool {
        self.kind == EndpointKind::Softphone
    }

    /// The main per-device file (see [`FileSpec::main`]).
    pub fn main_file(&self) -> Option<&FileSpec> {
        self.files
            .iter()
            .find(|f| f.per_device && f.main)
            .or_else(|| self.files.iter().find(|f| f.per_device))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("model {id}: {msg}")]
    Invalid { id: String, msg: String },
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Every known model, by id.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    models: BTreeMap<String, Model>,
    /// Which models request which file names, built once: a phone's request finds its file
    /// without trying every model's patterns.
    files: FileIndex,
    /// Every model's User-Agent strings, searched for at once.
    user_agents: UserAgentIndex,
}

/// The models' User-Agent strings in one automaton: a request's User-Agent is scanned once,
/// instead of being searched for each string of each model in turn.
#[derive(Clone, Debug, Default)]
struct UserAgentIndex {
    /// `None` when no model names a User-Agent string.
    matcher: Option<aho_corasick::AhoCorasick>,
    /// For each string, by its index in the automaton: the model's id and its place in
    /// catalogue order (the first model by id wins, as in a search model by model).
    models: Vec<(usize, String)>,
}

impl UserAgentIndex {
    fn of(models: &BTreeMap<String, Model>) -> UserAgentIndex {
        let mut strings = Vec::new();
        let mut owners = Vec::new();
        for (order, (id, m)) in models.iter().enumerate() {
            for p in m.user_agents.iter().filter(|p| !p.is_empty()) {
                strings.push(p.as_str());
                owners.push((order, id.clone()));
            }
        }
        UserAgentIndex {
            // Building fails only past the automaton's size limits, far beyond a catalogue's
            // strings; a search model by model (`None`) would then be the answer.
            matcher: aho_corasick::AhoCorasick::new(&strings).ok(),
            models: owners,
        }
    }

    /// The id of the first model (catalogue order) one of whose strings `ua` contains.
    fn model_of(&self, ua: &str) -> Option<&str> {
        let m = self.matcher.as_ref()?;
        m.find_overlapping_iter(ua)
            .map(|hit| &self.models[hit.pattern().as_usize()])
            .min_by_key(|(order, _)| *order)
            .map(|(_, id)| id.as_str())
    }
}

/// The catalogue's file names, by name for common files and by distinct `{mac}` pattern for
/// per-device files, each entry in catalogue order (model id, then the model's file order).
#[derive(Clone, Debug, Default)]
struct FileIndex {
    common: HashMap<String, Vec<(String, usize)>>,
    per_device: Vec<MacPattern>,
}

/// Every per-device file spelled `{pre}{mac}{post}`: (model id, index in its files).
#[derive(Clone, Debug)]
struct MacPattern {
    pre: String,
    post: String,
    files: Vec<(String, usize)>,
}

impl FileIndex {
    fn of(models: &BTreeMap<String, Model>) -> FileIndex {
        let mut index = FileIndex::default();
        for (id, m) in models {
            for (i, f) in m.files.iter().enumerate() {
                let at = (id.clone(), i);
                if !f.per_device {
                    index.common.entry(f.pattern.clone()).or_default().push(at);
                    continue;
                }
                let Some((pre, post)) = f.pattern.split_once("{mac}") else {
                    continue;
                };
                match index
                    .per_device
                    .iter_mut()
                    .find(|p| p.pre == pre && p.post == post)
                {
                    Some(p) => p.files.push(at),
                    None => index.per_device.push(MacPattern {
                        pre: pre.into(),
                        post: post.into(),
                        files: vec![at],
                    }),
                }
            }
        }
        index
    }
}

/// The per-device files of the catalogue one requested name matches, all with the same MAC.
pub(crate) struct MacFiles<'a> {
    catalog: &'a Catalog,
    files: &'a [(String, usize)],
}

impl<'a> MacFiles<'a> {
    /// The file of `model` among them, with its index in the model's files.
    pub(crate) fn of_model(&self, model: &str) -> Option<(usize, &'a Model, &'a FileSpec)> {
        let (id, i) = self.files.iter().find(|(id, _)| id == model)?;
        let m = self.catalog.models.get(id)?;
        Some((*i, m, m.files.get(*i)?))
    }
}

/// A file name phones may request: no path separators, no dot-dot, bounded.
pub(crate) fn valid_file_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && !name.contains("..")
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Parses a model folder's `model.toml`; its templates are its family's (from `families`) with
/// the folder's `own` on top.
fn parse_model(
    id: &str,
    text: &str,
    own: Templates,
    families: &BTreeMap<String, Templates>,
    parsed: &Parsed,
) -> Result<Model, CatalogError> {
    let invalid = |msg: String| CatalogError::Invalid {
        id: id.to_string(),
        msg,
    };
    if !valid_id(id) {
        return Err(invalid(
            "a model id (folder name) is lowercase letters, digits and '-'".into(),
        ));
    }
    let f: ModelFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    if f.line_keys == 0 {
        return Err(invalid("line_keys must be at least 1".into()));
    }
    let accounts = f.accounts.unwrap_or(f.line_keys);
    if accounts == 0 {
        return Err(invalid("accounts must be at least 1".into()));
    }
    let Some(family) = families.get(&f.family) else {
        return Err(invalid(format!(
            "family '{}' has no template folder {FAMILIES_DIR}/{}/ (built in or in templates_dir)",
            f.family, f.family
        )));
    };
    let mut templates = family.clone();
    templates.extend(own);
    for file in &f.files {
        if file.per_device != file.pattern.contains("{mac}") {
            return Err(invalid(format!(
                "file {}: per_device files (and only they) carry {{mac}} in their pattern",
                file.pattern
            )));
        }
        if !valid_file_name(&file.pattern.replace("{mac}", "000000000000")) {
            return Err(invalid(format!(
                "file {}: not a plain file name",
                file.pattern
            )));
        }
        if !templates.contains_key(&file.template) {
            return Err(invalid(format!(
                "file {}: template {} is in neither the model folder nor {FAMILIES_DIR}/{}/",
                file.pattern, file.template, f.family
            )));
        }
    }
    let mut expansion_modules = Vec::new();
    for m in &f.expansion_modules {
        let em = parsed.modules.get(m).ok_or_else(|| {
            invalid(format!(
                "expansion module {m} has no {MODULES_DIR}/{m}.toml (built in or in templates_dir)"
            ))
        })?;
        expansion_modules.push(em.clone());
    }
    if expansion_modules.is_empty() != (f.max_expansion_modules == 0) {
        return Err(invalid(
            "expansion_modules and max_expansion_modules go together (both set, or neither)".into(),
        ));
    }
    if let Some(fw) = &f.firmware {
        if !valid_file_name(&fw.file_for("1.0")) || fw.file.contains("{mac}") {
            return Err(invalid(format!(
                "firmware.file {}: not a plain file name ({{version}} may stand in it)",
                fw.file
            )));
        }
    }
    let locale = parsed.locales.get(&f.family).cloned().unwrap_or_default();
    Ok(Model {
        id: id.to_string(),
        vendor: f.vendor,
        family: f.family,
        name: f.name,
        line_keys: f.line_keys,
        accounts,
        mac_case: f.mac_case,
        kind: f.kind,
        user_agents: f.user_agents,
        notify: f.notify,
        sip_port: f.sip_port,
        files: f.files,
        checks: f.checks,
        templates,
        vars: f.vars,
        expansion_modules,
        max_expansion_modules: f.max_expansion_modules,
        locale,
        firmware: f.firmware,
    })
}

/// Expansion modules and family locales, parsed before the models that name them.
#[derive(Default)]
struct Parsed {
    modules: BTreeMap<String, Arc<ExpansionModel>>,
    locales: BTreeMap<String, Arc<Locale>>,
}

impl Parsed {
    fn of(sources: &Sources) -> Result<Parsed, CatalogError> {
        let mut p = Parsed::default();
        for (id, text) in &sources.modules {
            let invalid = |msg: String| CatalogError::Invalid {
                id: format!("{MODULES_DIR}/{id}"),
                msg,
            };
            if !valid_id(id) {
                return Err(invalid(
                    "a module id is lowercase letters, digits and '-'".into(),
                ));
            }
            let mut m: ExpansionModel = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
            if m.keys == 0 {
                return Err(invalid("keys must be at least 1".into()));
            }
            m.id = id.clone();
            p.modules.insert(id.clone(), Arc::new(m));
        }
        for (family, text) in &sources.locales {
            let l: Locale = toml::from_str(text).map_err(|e| CatalogError::Invalid {
                id: format!("{FAMILIES_DIR}/{family}/{LOCALE_FILE}"),
                msg: e.to_string(),
            })?;
            p.locales.insert(family.clone(), Arc::new(l));
        }
        Ok(p)
    }
}

/// The `.tera` files of an embedded folder.
fn builtin_templates(dir: &Dir<'_>) -> Templates {
    dir.files()
        .filter(|f| f.path().extension().is_some_and(|e| e == "tera"))
        .filter_map(|f| {
            let name = f.path().file_name()?.to_string_lossy().to_string();
            Some((name, f.contents_utf8()?.to_string()))
        })
        .collect()
}

fn read_text(p: &Path) -> Result<String, CatalogError> {
    std::fs::read_to_string(p).map_err(|e| CatalogError::Io {
        path: p.display().to_string(),
        source: e,
    })
}

/// The sub-folders of `dir`, by name.
fn read_subdirs(dir: &Path) -> Result<Vec<(String, std::path::PathBuf)>, CatalogError> {
    let io = |e| CatalogError::Io {
        path: dir.display().to_string(),
        source: e,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.path().is_dir() {
            out.push((
                entry.file_name().to_string_lossy().to_string(),
                entry.path(),
            ));
        }
    }
    out.sort();
    Ok(out)
}

/// The `.tera` files of a folder on disk.
fn read_templates(dir: &Path) -> Result<Templates, CatalogError> {
    let io = |e| CatalogError::Io {
        path: dir.display().to_string(),
        source: e,
    };
    let mut templates = Templates::new();
    for f in std::fs::read_dir(dir).map_err(io)? {
        let p = f.map_err(io)?.path();
        if p.is_file() && p.extension().is_some_and(|e| e == "tera") {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            templates.insert(name, read_text(&p)?);
        }
    }
    Ok(templates)
}

/// A catalogue's folders as read, before parsing: model folders replace each other whole (by
/// id), family folders are merged file by file (a later file replaces one of the same name).
#[derive(Default)]
struct Sources {
    /// Model id → (model.toml text, the folder's own templates).
    models: BTreeMap<String, (String, Templates)>,
    /// Family → its templates.
    families: BTreeMap<String, Templates>,
    /// Family → its locale.toml text.
    locales: BTreeMap<String, String>,
    /// Module id → its `_modules/<id>.toml` text.
    modules: BTreeMap<String, String>,
}

impl Sources {
    fn builtin() -> Sources {
        let mut s = Sources::default();
        for dir in BUILTIN.dirs() {
            let name = dir.path().to_string_lossy().to_string();
            if name == FAMILIES_DIR {
                for fam in dir.dirs() {
                    let Some(family) = fam.path().file_name() else {
                        continue;
                    };
                    let family = family.to_string_lossy().to_string();
                    if let Some(l) = fam.get_file(fam.path().join(LOCALE_FILE)) {
                        let text = l.contents_utf8().unwrap_or_default().to_string();
                        s.locales.insert(family.clone(), text);
                    }
                    s.families
                        .entry(family)
                        .or_default()
                        .extend(builtin_templates(fam));
                }
                continue;
            }
            if name == MODULES_DIR {
                for f in dir.files() {
                    let p = f.path();
                    if let (Some(stem), Some("toml")) = (
                        p.file_stem().map(|x| x.to_string_lossy().to_string()),
                        p.extension().and_then(|e| e.to_str()),
                    ) {
                        let text = f.contents_utf8().unwrap_or_default().to_string();
                        s.modules.insert(stem, text);
                    }
                }
                continue;
            }
            let Some(file) = dir.get_file(dir.path().join("model.toml")) else {
                continue;
            };
            let text = file.contents_utf8().unwrap_or_default().to_string();
            s.models.insert(name, (text, builtin_templates(dir)));
        }
        s
    }

    /// Adds `<dir>/_families/*/` and every `<dir>/<model-id>/model.toml` on top.
    fn add_dir(&mut self, dir: &Path) -> Result<(), CatalogError> {
        for (name, path) in read_subdirs(dir)? {
            if name == FAMILIES_DIR {
                for (family, fam) in read_subdirs(&path)? {
                    let locale = fam.join(LOCALE_FILE);
                    if locale.is_file() {
                        self.locales.insert(family.clone(), read_text(&locale)?);
                    }
                    self.families
                        .entry(family)
                        .or_default()
                        .extend(read_templates(&fam)?);
                }
                continue;
            }
            if name == MODULES_DIR {
                let io = |e| CatalogError::Io {
                    path: path.display().to_string(),
                    source: e,
                };
                for f in std::fs::read_dir(&path).map_err(io)? {
                    let p = f.map_err(io)?.path();
                    if p.is_file() && p.extension().is_some_and(|e| e == "toml") {
                        let stem = p
                            .file_stem()
                            .unwrap_or_default()
                            .to_string_lossy()
                            .to_string();
                        self.modules.insert(stem, read_text(&p)?);
                    }
                }
                continue;
            }
            let toml = path.join("model.toml");
            if !toml.is_file() {
                continue;
            }
            self.models
                .insert(name, (read_text(&toml)?, read_templates(&path)?));
        }
        Ok(())
    }

    fn parse(self) -> Result<Catalog, CatalogError> {
        let mut c = Catalog::default();
        let parsed = Parsed::of(&self)?;
        for (id, (text, own)) in self.models {
            let m = parse_model(&id, &text, own, &self.families, &parsed)?;
            c.models.insert(id, m);
        }
        c.files = FileIndex::of(&c.models);
        c.user_agents = UserAgentIndex::of(&c.models);
        Ok(c)
    }
}

impl Catalog {
    /// The models embedded in the binary.
    pub fn builtin() -> Result<Catalog, CatalogError> {
        Sources::builtin().parse()
    }

    /// Built-in models, then every `<dir>/<model-id>/model.toml` on top (adding or replacing),
    /// with `<dir>/_families/<family>/*.tera` on top of the built-in family templates.
    pub fn load(extra: Option<&Path>) -> Result<Catalog, CatalogError> {
        let mut s = Sources::builtin();
        if let Some(dir) = extra {
            s.add_dir(dir)?;
        }
        s.parse()
    }

    pub fn get(&self, id: &str) -> Option<&Model> {
        self.models.get(id)
    }

    pub fn models(&self) -> impl Iterator<Item = &Model> {
        self.models.values()
    }

    /// The common files named exactly `file`, in catalogue order.
    pub(crate) fn common_files<'a>(
        &'a self,
        file: &str,
    ) -> impl Iterator<Item = (&'a Model, &'a FileSpec)> + 'a {
        self.files
            .common
            .get(file)
            .into_iter()
            .flatten()
            .filter_map(|(id, i)| {
                let m = self.models.get(id)?;
                Some((m, m.files.get(*i)?))
            })
    }

    /// The per-device patterns `file` matches, each with the MAC it names (its hex digits in
    /// either case) and the models' files spelled that way.
    pub(crate) fn mac_files<'a>(
        &'a self,
        file: &'a str,
    ) -> impl Iterator<Item = (crate::domain::Mac, MacFiles<'a>)> + 'a {
        self.files.per_device.iter().filter_map(move |p| {
            // The length first: it rules out most patterns without comparing a byte.
            if file.len() != p.pre.len() + 12 + p.post.len() {
                return None;
            }
            let hex = file.strip_prefix(&p.pre)?.strip_suffix(&p.post)?;
            let mac = crate::domain::Mac::parse(hex).ok()?;
            Some((
                mac,
                MacFiles {
                    catalog: self,
                    files: &p.files,
                },
            ))
        })
    }

    /// The model a User-Agent names, if any.
    pub(crate) fn model_for_user_agent(&self, ua: &str) -> Option<&Model> {
        self.models.get(self.user_agents.model_of(ua)?)
    }

    /// The key space of a phone of `model` carrying `modules` ([`Model::device_caps`]).
    pub(crate) fn device_caps(
        &self,
        model: &str,
        modules: &[ExpansionModule],
    ) -> Option<Result<ModelCaps, DomainError>> {
        self.get(model).map(|m| m.device_caps(modules))
    }
}

/// The rules' view of the outside world: catalogue, limits, and random secrets.
pub(crate) struct RulesEnv {
    pub(crate) catalog: std::sync::Arc<Catalog>,
    pub(crate) max_sca_per_user: usize,
}

impl Env for RulesEnv {
    fn device_caps(
        &self,
        model: &str,
        modules: &[ExpansionModule],
    ) -> Option<Result<ModelCaps, DomainError>> {
        self.catalog.device_caps(model, modules)
    }
    fn max_sca_per_user(&self) -> usize {
        self.max_sca_per_user
    }
    fn new_secret(&self) -> String {
        crate::secrets::password()
    }
    fn random_id(&self) -> [u8; 5] {
        crate::secrets::random_id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalogue_has_one_model_per_family_at_least() {
        let c = Catalog::builtin().unwrap();
        let families: std::collections::BTreeSet<_> =
            c.models().map(|m| m.family.as_str()).collect();
        for f in [
            "polycom-vvx",
            "yealink-t4x-t5x",
            "cisco-mpp",
            "grandstream",
            "snom-d7xx",
            "fanvil-x",
            "mitel-6800i",
        ] {
            assert!(families.contains(f), "family {f} missing");
        }
        let vvx = c.get("polycom-vvx-450").unwrap();
        assert_eq!(
            (vvx.line_keys, vvx.accounts, vvx.mac_case),
            (12, 12, MacCase::Lower)
        );
        let t54 = c.get("yealink-t54w").unwrap();
        assert_eq!((t54.line_keys, t54.accounts), (27, 16));
        assert_eq!(c.get("cisco-cp-8851-3pcc").unwrap().notify.resync, "resync");
        assert_eq!(c.get("snom-d785").unwrap().mac_case, MacCase::Upper);
    }

    #[test]
    fn a_new_model_is_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("yealink-t57w");
        std::fs::create_dir(&m).unwrap();
        std::fs::write(
            m.join("model.toml"),
            "vendor = \"Yealink\"\nfamily = \"yealink-t4x-t5x\"\nname = \"Yealink SIP-T57W\"\nline_keys = 29\naccounts = 16\nmac_case = \"lower\"\n[notify]\nresync = \"check-sync\"\nreboot = \"check-sync;reboot=true\"\n",
        )
        .unwrap();
        let c = Catalog::load(Some(dir.path())).unwrap();
        assert_eq!(c.get("yealink-t57w").unwrap().line_keys, 29);
        assert!(c.get("polycom-vvx-450").is_some(), "built-ins stay");
    }

    /// A Yealink-like model.toml of `family` whose one file uses `template`.
    fn model_toml(family: &str, template: &str) -> String {
        format!(
            "vendor = \"Yealink\"\nfamily = \"{family}\"\nname = \"Test\"\nline_keys = 29\naccounts = 16\nmac_case = \"lower\"\n[vars]\nhardware_id = \"123\"\n[notify]\nresync = \"check-sync\"\nreboot = \"check-sync;reboot=true\"\n[[files]]\npattern = \"{{mac}}.boot\"\ntemplate = \"{template}\"\ncontent_type = \"text/plain\"\nper_device = true\n"
        )
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn models_of_one_family_render_from_the_same_template_bodies() {
        let c = Catalog::builtin().unwrap();
        for (a, b) in [
            ("yealink-t46u", "yealink-t54w"),
            ("polycom-vvx-411", "polycom-vvx-450"),
        ] {
            let (a, b) = (c.get(a).unwrap(), c.get(b).unwrap());
            assert_eq!(a.family, b.family);
            assert!(!a.templates.is_empty());
            assert_eq!(a.templates, b.templates, "{} and {}", a.id, b.id);
        }
        // What differs is model data.
        let hw = |id: &str| c.get(id).unwrap().vars["hardware_id"].clone();
        assert_eq!(
            (hw("yealink-t46u"), hw("yealink-t54w")),
            ("108".into(), "096".into())
        );
    }

    #[test]
    fn a_model_folders_own_template_overrides_the_familys() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("yealink-t57w");
        write(
            &m.join("model.toml"),
            &model_toml("yealink-t4x-t5x", "boot.tera"),
        );
        write(&m.join("boot.tera"), "own boot\n");
        let c = Catalog::load(Some(dir.path())).unwrap();
        let t57 = c.get("yealink-t57w").unwrap();
        assert_eq!(t57.templates["boot.tera"], "own boot\n");
        let t54 = c.get("yealink-t54w").unwrap();
        assert_ne!(t54.templates["boot.tera"], "own boot\n", "only that model");
        assert_eq!(t57.templates["mac.cfg.tera"], t54.templates["mac.cfg.tera"]);
        assert_eq!(t57.vars["hardware_id"], "123");
    }

    #[test]
    fn templates_dir_families_add_families_and_override_family_files() {
        let dir = tempfile::tempdir().unwrap();
        let fam = dir.path().join(FAMILIES_DIR);
        write(&fam.join("acme/mac.cfg.tera"), "acme\n");
        write(&fam.join("polycom-vvx/phone.cfg.tera"), "local phone\n");
        write(
            &dir.path().join("acme-one/model.toml"),
            &model_toml("acme", "mac.cfg.tera"),
        );
        let c = Catalog::load(Some(dir.path())).unwrap();
        assert_eq!(
            c.get("acme-one").unwrap().templates["mac.cfg.tera"],
            "acme\n"
        );
        let builtin = Catalog::builtin().unwrap();
        for id in ["polycom-vvx-411", "polycom-vvx-450"] {
            let m = c.get(id).unwrap();
            assert_eq!(m.templates["phone.cfg.tera"], "local phone\n", "{id}");
            assert_eq!(
                m.templates["master.cfg.tera"],
                builtin.get(id).unwrap().templates["master.cfg.tera"],
                "the family's other files stay built in"
            );
        }
    }

    #[test]
    fn the_families_folder_is_not_a_model() {
        let c = Catalog::builtin().unwrap();
        assert!(c.get(FAMILIES_DIR).is_none());
        assert!(c.models().all(|m| !m.id.starts_with('_')));
        assert_eq!(
            c.models().count(),
            BUILTIN
                .dirs()
                .filter(|d| d.get_file(d.path().join("model.toml")).is_some())
                .count()
        );
        // Not on disk either, even with a model.toml in it.
        let dir = tempfile::tempdir().unwrap();
        let fam = dir.path().join(FAMILIES_DIR);
        write(&fam.join("model.toml"), &model_toml("acme", "mac.cfg.tera"));
        write(&fam.join("acme/mac.cfg.tera"), "acme\n");
        let c = Catalog::load(Some(dir.path())).unwrap();
        assert!(c.get(FAMILIES_DIR).is_none());
        assert_eq!(
            c.models().count(),
            Catalog::builtin().unwrap().models().count()
        );
    }

    #[test]
    fn an_unknown_family_is_an_error_naming_the_model() {
        let dir = tempfile::tempdir().unwrap();
        write(
            &dir.path().join("acme-one/model.toml"),
            &model_toml("acme", "mac.cfg.tera"),
        );
        let e = Catalog::load(Some(dir.path())).unwrap_err().to_string();
        assert!(e.starts_with("model acme-one:"), "{e}");
        assert!(e.contains("family 'acme'"), "{e}");
    }

    #[test]
    fn a_template_neither_the_model_nor_its_family_has_is_an_error_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        write(
            &dir.path().join("yealink-t57w/model.toml"),
            &model_toml("yealink-t4x-t5x", "nope.tera"),
        );
        let e = Catalog::load(Some(dir.path())).unwrap_err().to_string();
        assert!(e.starts_with("model yealink-t57w:"), "{e}");
        assert!(
            e.contains("nope.tera") && e.contains("yealink-t4x-t5x"),
            "{e}"
        );
    }

    #[test]
    fn no_builtin_model_folder_holds_a_copy_of_its_familys_template() {
        let sources = Sources::builtin();
        let c = Catalog::builtin().unwrap();
        for (id, (_, own)) in &sources.models {
            let family = &sources.families[&c.get(id).unwrap().family];
            for (name, body) in own {
                assert_ne!(
                    family.get(name),
                    Some(body),
                    "device-templates/{id}/{name} is a copy of {FAMILIES_DIR}/{}/{name}: delete it",
                    c.get(id).unwrap().family
                );
            }
        }
    }

    #[test]
    fn reboot_on_parses_into_change_kinds_and_refuses_unknown_names() {
        let base = "vendor = \"V\"\nfamily = \"f\"\nname = \"N\"\nline_keys = 2\nmac_case = \"lower\"\n[notify]\nresync = \"r\"\nreboot = \"b\"\n";
        let families = BTreeMap::from([("f".to_string(), Templates::new())]);
        let m = parse_model("m", base, BTreeMap::new(), &families, &Parsed::default()).unwrap();
        assert_eq!(m.notify.reboot_on, vec![ChangeKind::Lines], "default");
        let text = format!("{base}reboot_on = [\"keys\", \"template\"]\n");
        let m = parse_model("m", &text, BTreeMap::new(), &families, &Parsed::default()).unwrap();
        assert_eq!(
            m.notify.reboot_on,
            vec![ChangeKind::Keys, ChangeKind::Template]
        );
        let text = format!("{base}reboot_on = [\"line\"]\n");
        let e = parse_model("m", &text, BTreeMap::new(), &families, &Parsed::default())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("model m:"), "{e}");
        assert!(
            e.contains(
                "unknown change kind 'line' (one of lines, keys, settings, template, unregister)"
            ),
            "{e}"
        );
    }

    #[test]
    fn a_broken_model_file_is_an_error_naming_the_model() {
        let families = BTreeMap::new();
        let e = parse_model(
            "x",
            "vendor = 1",
            Templates::new(),
            &families,
            &Parsed::default(),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("model x:"), "{e}");
        assert!(parse_model(
            "Bad/Id",
            "",
            Templates::new(),
            &families,
            &Parsed::default()
        )
        .is_err());
    }
}
