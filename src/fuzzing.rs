//! Entry points for the fuzz targets in `fuzz/` (cargo feature `fuzzing`, off by default).
//!
//! Thin wrappers around crate-private parsers, so the product's API stays narrow: each returns
//! plain data the targets can state properties about. Not part of the supported API.

use crate::catalog::Catalog;
use crate::domain::state::State;
use crate::domain::Mac;

/// The phone listener's file-name check on a request path: the name, or the refusing status.
pub fn phone_file_name(path: &str) -> Result<&str, u16> {
    crate::phone::file_name(path).map_err(|s| s.as_u16())
}

/// The catalogue's file-name syntax check.
pub fn valid_file_name(name: &str) -> bool {
    crate::catalog::valid_file_name(name)
}

/// What [`crate::render::resolve`] made of a file name.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolved {
    /// A per-device file of a provisioned device: (MAC, model id, file pattern).
    Device(Mac, String, String),
    /// A per-device name whose MAC is not provisioned for a model requesting it.
    Unknown(Mac),
    /// A common file: (model id, file pattern).
    Common(String, String),
}

/// Resolves a file name against `catalog` and `state`.
pub fn resolve(
    catalog: &Catalog,
    state: &State,
    name: &str,
    ua_model: Option<&str>,
) -> Option<Resolved> {
    use crate::render::Target;
    Some(
        match crate::render::resolve(catalog, state, name, ua_model)? {
            Target::Device { mac, model, spec } => {
                Resolved::Device(mac, model.id.clone(), spec.pattern.clone())
            }
            Target::Unknown(mac) => Resolved::Unknown(mac),
            Target::Common { model, spec } => {
                Resolved::Common(model.id.clone(), spec.pattern.clone())
            }
        },
    )
}

/// The model of the provisioned device `mac` in `state`.
pub fn device_model<'a>(state: &'a State, mac: &Mac) -> Option<&'a str> {
    state.devices.get(mac).map(|d| d.model.as_str())
}

/// A parsed User-Agent.
#[derive(Clone, Debug, PartialEq)]
pub struct UserAgent {
    pub model: Option<String>,
    pub firmware: Option<String>,
    pub mac: Option<Mac>,
}

pub fn user_agent(catalog: &Catalog, ua: &str) -> UserAgent {
    let u = crate::phone::useragent::parse(catalog, ua);
    UserAgent {
        model: u.model,
        firmware: u.firmware,
        mac: u.mac,
    }
}

/// The User-Agent substrings the catalogue matches `model` by.
pub fn user_agent_patterns<'a>(catalog: &'a Catalog, model: &str) -> &'a [String] {
    catalog.get(model).map_or(&[], |m| &m.user_agents)
}

/// The parameters of an `Authorization: Digest ...` header.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DigestCredentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Option<String>,
    pub qop: Option<String>,
    pub nc: Option<String>,
    pub cnonce: Option<String>,
}

pub fn digest_parse(header: &str) -> Option<DigestCredentials> {
    let c = crate::phone::digest::parse(header)?;
    let own = |v: Option<std::borrow::Cow<'_, str>>| v.map(|v| v.into_owned());
    Some(DigestCredentials {
        username: c.username.into_owned(),
        realm: c.realm.into_owned(),
        nonce: c.nonce.into_owned(),
        uri: c.uri.into_owned(),
        response: c.response.into_owned(),
        algorithm: own(c.algorithm),
        qop: own(c.qop),
        nc: own(c.nc),
        cnonce: own(c.cnonce),
    })
}

/// A parsed SIP response.
#[derive(Clone, Debug, PartialEq)]
pub struct SipResponse {
    pub status: u16,
    pub reason: String,
    /// (lowercase full name, value), in order.
    pub headers: Vec<(String, String)>,
    /// The top Via's `branch`.
    pub branch: Option<String>,
}

pub fn sip_response(buf: &[u8]) -> Result<SipResponse, String> {
    let r = crate::sync::sip::message::parse_response(buf)?;
    Ok(SipResponse {
        branch: r.branch().map(str::to_string),
        status: r.status,
        reason: r.reason,
        headers: r.headers,
    })
}

/// `deskprov.toml` text to a validated config, as `Config::load` does after reading the file.
pub fn config(text: &str) -> Result<crate::config::Config, String> {
    let c: crate::config::Config = toml::from_str(text).map_err(|e| e.to_string())?;
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}

/// A renderer on a catalogue with the sample state of one model, for template validation.
pub struct TemplateCheck {
    renderer: crate::render::Renderer,
    state: State,
    model: String,
}

impl TemplateCheck {
    pub fn new(catalog: Catalog, model: &str) -> TemplateCheck {
        let state = crate::render::fixtures::sample_state(&catalog, model).expect("sample state");
        TemplateCheck {
            renderer: crate::render::Renderer::new(
                std::sync::Arc::new(catalog),
                crate::render::fixtures::BASE_URL.into(),
                &[],
            ),
            state,
            model: model.to_string(),
        }
    }

    /// The model's template names, in the order its files first name them.
    pub fn templates(&self) -> Vec<String> {
        let m = self.renderer.catalog().get(&self.model).expect("model");
        let mut names: Vec<String> = Vec::new();
        for f in &m.files {
            if !names.contains(&f.template) {
                names.push(f.template.clone());
            }
        }
        names
    }

    /// Validates `body` as the model's `template`, as an upload is: the files rendered, or why not.
    pub fn validate(&self, template: &str, body: &str) -> Result<usize, String> {
        let model = self.renderer.catalog().get(&self.model).expect("model");
        self.renderer
            .validate(&self.state, &[], model, template, body)
            .map_err(|e| e.to_string())
    }
}
