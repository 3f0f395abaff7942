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

use crate::domain::{Env, ModelCaps};

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

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn parse_model(id: &str, text: &str) -> Result<Model, CatalogError> {
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
            c.models.insert(id.clone(), parse_model(&id, text)?);
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
            let text = std::fs::read_to_string(&path).map_err(|e| CatalogError::Io {
                path: path.display().to_string(),
                source: e,
            })?;
            c.models.insert(id.clone(), parse_model(&id, &text)?);
        }
        Ok(c)
    }

    pub fn get(&self, id: &str) -> Option<&Model> {
        self.models.get(id)
    }

    pub fn models(&self) -> impl Iterator<Item = &Model> {
        self.models.values()
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
    fn a_broken_model_file_is_an_error_naming_the_model() {
        let e = parse_model("x", "vendor = 1").unwrap_err();
        assert!(e.to_string().starts_with("model x:"), "{e}");
        assert!(parse_model("Bad/Id", "").is_err());
    }
}
