//! The model catalogue: `device-templates/<model-id>/model.toml`, data only.
//!
//! The built-in folder is embedded in the binary (so `deskprov serve` works from any directory);
//! `templates_dir` may add models or override built-in ones folder by folder. A model id is its
//! folder name.

use std::collections::BTreeMap;
use std::path::Path;

use include_dir::{include_dir, Dir};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{ChangeKind, Env, ModelCaps};

static BUILTIN: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/device-templates");

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
pub struct Notify {
    /// `Event:` that makes the phone re-fetch its files.
    pub resync: String,
    /// `Event:` that makes the phone reboot.
    pub reboot: String,
    /// Change kinds that need a reboot rather than a re-sync: `lines` (registrations or
    /// appearances changed), `keys`, `settings`, `template`. Default: `lines`. An unknown name
    /// fails the model's loading with the list of valid ones.
    #[serde(default = "default_reboot_on")]
    pub reboot_on: Vec<ChangeKind>,
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
    /// Template file in the model's folder.
    pub template: String,
    pub content_type: String,
    /// Rendered per device (may hold secrets, needs device auth) or common to the model.
    pub per_device: bool,
    /// The device's main file: fetching it marks the revision as applied. Default: the first
    /// per-device file.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub main: bool,
}

impl FileSpec {
    /// Whether the content is XML (checked for well-formedness, values XML-escaped).
    pub fn is_xml(&self) -> bool {
        let ct = self.content_type.split(';').next().unwrap_or("").trim();
        ct.ends_with("/xml") || ct.ends_with("+xml")
    }

    /// The MAC in `name` if it matches this (per-device) pattern. The MAC's hex digits may be
    /// in either case; the rest must match exactly.
    pub fn match_mac(&self, name: &str) -> Option<crate::domain::Mac> {
        let (pre, post) = self.pattern.split_once("{mac}")?;
        let hex = name.strip_prefix(pre)?.strip_suffix(post)?;
        if hex.len() != 12 {
            return None;
        }
        crate::domain::Mac::parse(hex).ok()
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

/// Semantic checks of rendered files, run by the fixture tests: each entry is a key=value fact
/// that must hold in the main file, with `{index}` (registration) and `{key}` (line key)
/// placeholders (`{index0}` and `{key0}` for 0-based numbering). See `crate::render::flatten`
/// for how files become key=value facts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    /// Facts that mark registration `{index}` as a shared appearance.
    #[serde(default)]
    pub shared: Vec<String>,
    /// Facts that put registration `{index}` on line key `{key}`.
    #[serde(default)]
    pub line_key: Vec<String>,
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
    #[serde(default)]
    user_agents: Vec<String>,
    notify: Notify,
    #[serde(default = "default_sip_port")]
    sip_port: u16,
    #[serde(default)]
    files: Vec<FileSpec>,
    #[serde(default)]
    checks: Checks,
}

/// One phone model.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct Model {
    pub id: String,
    pub vendor: String,
    pub family: String,
    pub name: String,
    pub line_keys: u16,
    pub accounts: u16,
    pub mac_case: MacCase,
    /// Substrings of the User-Agent that identify this model.
    pub user_agents: Vec<String>,
    pub notify: Notify,
    /// Where the phone listens for SIP (NOTIFYs to its last-seen address go here).
    pub sip_port: u16,
    pub files: Vec<FileSpec>,
    #[serde(skip)]
    pub checks: Checks,
    /// Built-in template sources by template file name.
    #[serde(skip)]
    pub templates: BTreeMap<String, String>,
}

impl Model {
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
}

/// A file name phones may request: no path separators, no dot-dot, bounded.
pub fn valid_file_name(name: &str) -> bool {
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

fn parse_model(
    id: &str,
    text: &str,
    templates: BTreeMap<String, String>,
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
                "file {}: template {} is missing",
                file.pattern, file.template
            )));
        }
    }
    Ok(Model {
        id: id.to_string(),
        vendor: f.vendor,
        family: f.family,
        name: f.name,
        line_keys: f.line_keys,
        accounts,
        mac_case: f.mac_case,
        user_agents: f.user_agents,
        notify: f.notify,
        sip_port: f.sip_port,
        files: f.files,
        checks: f.checks,
        templates,
    })
}

impl Catalog {
    /// The models embedded in the binary.
    pub fn builtin() -> Result<Catalog, CatalogError> {
        let mut c = Catalog::default();
        for dir in BUILTIN.dirs() {
            let id = dir.path().to_string_lossy().to_string();
            let Some(file) = dir.get_file(dir.path().join("model.toml")) else {
                continue;
            };
            let text = file.contents_utf8().unwrap_or_default();
            let templates = dir
                .files()
                .filter(|f| f.path().extension().is_some_and(|e| e == "tera"))
                .filter_map(|f| {
                    let name = f.path().file_name()?.to_string_lossy().to_string();
                    Some((name, f.contents_utf8()?.to_string()))
                })
                .collect();
            c.models
                .insert(id.clone(), parse_model(&id, text, templates)?);
        }
        Ok(c)
    }

    /// Built-in models, then every `<dir>/<model-id>/model.toml` on top (adding or replacing).
    pub fn load(extra: Option<&Path>) -> Result<Catalog, CatalogError> {
        let mut c = Catalog::builtin()?;
        let Some(dir) = extra else { return Ok(c) };
        let io = |e| CatalogError::Io {
            path: dir.display().to_string(),
            source: e,
        };
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .collect::<Result<_, _>>()
            .map_err(io)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path().join("model.toml");
            if !path.is_file() {
                continue;
            }
            let id = entry.file_name().to_string_lossy().to_string();
            let read = |p: &Path| {
                std::fs::read_to_string(p).map_err(|e| CatalogError::Io {
                    path: p.display().to_string(),
                    source: e,
                })
            };
            let text = read(&path)?;
            let mut templates = BTreeMap::new();
            for f in std::fs::read_dir(entry.path()).map_err(io)? {
                let p = f.map_err(io)?.path();
                if p.extension().is_some_and(|e| e == "tera") {
                    let name = p
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .to_string();
                    templates.insert(name, read(&p)?);
                }
            }
            c.models
                .insert(id.clone(), parse_model(&id, &text, templates)?);
        }
        Ok(c)
    }

    pub fn get(&self, id: &str) -> Option<&Model> {
        self.models.get(id)
    }

    pub fn models(&self) -> impl Iterator<Item = &Model> {
        self.models.values()
    }

    /// Models whose file patterns could name `file`, with the matching spec.
    pub fn files_matching<'a>(
        &'a self,
        file: &'a str,
    ) -> impl Iterator<Item = (&'a Model, &'a FileSpec)> + 'a {
        self.models.values().flat_map(move |m| {
            m.files.iter().filter_map(move |f| {
                let hit = if f.per_device {
                    f.match_mac(file).is_some()
                } else {
                    f.pattern == file
                };
                hit.then_some((m, f))
            })
        })
    }

    /// The model a User-Agent names, if any.
    pub fn model_for_user_agent(&self, ua: &str) -> Option<&Model> {
        self.models.values().find(|m| {
            m.user_agents
                .iter()
                .any(|p| !p.is_empty() && ua.contains(p.as_str()))
        })
    }

    pub fn caps(&self, id: &str) -> Option<ModelCaps> {
        self.get(id).map(|m| ModelCaps {
            line_keys: m.line_keys,
            accounts: m.accounts,
        })
    }
}

/// The rules' view of the outside world: catalogue, limits, and random secrets.
pub struct RulesEnv {
    pub catalog: std::sync::Arc<Catalog>,
    pub max_sca_per_user: usize,
}

impl Env for RulesEnv {
    fn model(&self, id: &str) -> Option<ModelCaps> {
        self.catalog.caps(id)
    }
    fn max_sca_per_user(&self) -> usize {
        self.max_sca_per_user
    }
    fn new_secret(&self) -> String {
        crate::secrets::password()
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
        assert_eq!(c.caps("yealink-t57w").unwrap().line_keys, 29);
        assert!(c.get("polycom-vvx-450").is_some(), "built-ins stay");
    }

    #[test]
    fn reboot_on_parses_into_change_kinds_and_refuses_unknown_names() {
        let base = "vendor = \"V\"\nfamily = \"f\"\nname = \"N\"\nline_keys = 2\nmac_case = \"lower\"\n[notify]\nresync = \"r\"\nreboot = \"b\"\n";
        let m = parse_model("m", base, BTreeMap::new()).unwrap();
        assert_eq!(m.notify.reboot_on, vec![ChangeKind::Lines], "default");
        let text = format!("{base}reboot_on = [\"keys\", \"template\"]\n");
        let m = parse_model("m", &text, BTreeMap::new()).unwrap();
        assert_eq!(
            m.notify.reboot_on,
            vec![ChangeKind::Keys, ChangeKind::Template]
        );
        let text = format!("{base}reboot_on = [\"line\"]\n");
        let e = parse_model("m", &text, BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("model m:"), "{e}");
        assert!(
            e.contains("unknown change kind 'line' (one of lines, keys, settings, template)"),
            "{e}"
        );
    }

    #[test]
    fn a_broken_model_file_is_an_error_naming_the_model() {
        let e = parse_model("x", "vendor = 1", BTreeMap::new()).unwrap_err();
        assert!(e.to_string().starts_with("model x:"), "{e}");
        assert!(parse_model("Bad/Id", "", BTreeMap::new()).is_err());
    }
}
