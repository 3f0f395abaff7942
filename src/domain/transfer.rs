//! The export document and the CSV files of an import (SPEC §4 `/import`, `/export`), turned
//! into the rows [`rules::import`](super::rules::import) applies. Parsing only, no I/O.
//!
//! The JSON document is what `export` writes, for the whole platform or one group; importing
//! it into an empty server reproduces what was exported. CSV files carry one kind of object
//! of one group (`users`, `devices`, `sca`, `members`) with a header row naming the columns;
//! a column left out of the header keeps the stored value, an empty cell means "not set" (for
//! a password: keep the stored one, or generate one for a new object).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::entities::*;
use super::ids::*;
use super::rules::{
    DeviceInput, ImportOp, ImportRow, KeyProfileInput, RowError, ScaInput, SharedLineInput,
    SipInput, UserInput,
};
use super::state::State;
use super::{DomainError, ErrorCode};

/// `format` of an export document.
pub(crate) const FORMAT: &str = "deskprov-export";

/// The export document: every group with its users, devices, SCA endpoints and shared lines.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Document {
    /// Always `deskprov-export`.
    pub(crate) format: String,
    /// The document version, 1.
    pub(crate) version: u32,
    pub(crate) groups: Vec<GroupDoc>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupDoc {
    pub(crate) group: Group,
    #[serde(default)]
    pub(crate) users: Vec<UserInput>,
    /// The group's key profiles (before the devices that name them).
    #[serde(default)]
    pub(crate) key_profiles: Vec<KeyProfileInput>,
    #[serde(default)]
    pub(crate) devices: Vec<DeviceDoc>,
    #[serde(default)]
    pub(crate) sca: Vec<ScaDoc>,
    #[serde(default)]
    pub(crate) shared_lines: Vec<SharedLineDoc>,
}

/// A device as exported: the API's device input and, with secrets, its provisioning password.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeviceDoc {
    pub(crate) mac: Mac,
    #[serde(default)]
    pub(crate) name: Option<String>,
    pub(crate) model: String,
    #[serde(default)]
    pub(crate) owner: Option<Extension>,
    #[serde(default)]
    pub(crate) keys: Vec<ProgKey>,
    #[serde(default)]
    pub(crate) settings: BTreeMap<String, String>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub(crate) notify_target: Option<NotifyTarget>,
    #[serde(default)]
    pub(crate) expansion_modules: Vec<ExpansionModule>,
    /// A key profile of the group (one of the group's `key_profiles`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub(crate) key_profile: Option<ProfileName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) prov_password: Option<String>,
}

/// An SCA endpoint as exported: the user it belongs to and the API's endpoint input.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScaDoc {
    pub(crate) extension: Extension,
    #[serde(default)]
    pub(crate) line_port: Option<String>,
    /// Device name in the group, or its MAC.
    pub(crate) device: String,
    #[serde(default)]
    pub(crate) key: Option<KeyNo>,
    #[serde(default)]
    pub(crate) label: Option<String>,
    #[serde(default = "default_true")]
    pub(crate) active: bool,
    #[serde(default = "default_true")]
    pub(crate) allow_origination: bool,
    #[serde(default = "default_true")]
    pub(crate) allow_termination: bool,
}

/// A shared line as exported, with its members and, with secrets, its SIP password.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SharedLineDoc {
    pub(crate) number: SharedNumber,
    #[serde(default)]
    pub(crate) direct_dial: Option<String>,
    #[serde(default)]
    pub(crate) description: String,
    #[serde(default)]
    pub(crate) forward_to_voicemail: bool,
    #[serde(default)]
    pub(crate) autodial_digits: Option<String>,
    #[serde(default)]
    pub(crate) members: Vec<Member>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) password: Option<String>,
}

fn user_input(u: &User, secrets: bool) -> UserInput {
    UserInput {
        extension: u.extension.clone(),
        phone_number: u.phone_number.clone(),
        first_name: u.first_name.to_string(),
        last_name: u.last_name.to_string(),
        display_name: u.display_name.as_ref().map(|d| d.to_string()),
        kind: u.kind,
        login_allowed: u.login_allowed,
        allowed_endpoints: u.allowed_endpoints,
        sip: SipInput {
            username: u.sip.username().map(str::to_string),
            auth_username: u.sip.auth_username().map(str::to_string),
            password: secrets.then(|| u.sip.password.expose().to_string()),
        },
        features: u.features.clone(),
    }
}

fn device_doc(d: &Device, secrets: bool) -> DeviceDoc {
    DeviceDoc {
        mac: d.mac.clone(),
        name: Some(d.name.to_string()),
        model: d.model.to_string(),
        owner: d.owner.clone(),
        keys: d.keys.clone(),
        settings: d.settings.clone(),
        notify_target: d.notify_target.as_deref().cloned(),
        expansion_modules: d.expansion_modules.to_vec(),
        key_profile: d.key_profile.as_deref().cloned(),
        prov_password: secrets.then(|| d.prov_password.expose().to_string()),
    }
}

fn sca_doc(x: &ScaEndpoint) -> ScaDoc {
    ScaDoc {
        extension: x.extension.clone(),
        line_port: Some(x.line_port.to_string()),
        device: x.device.to_string(),
        key: Some(x.key),
        label: x.label.clone(),
        active: x.active,
        allow_origination: x.allow_origination,
        allow_termination: x.allow_termination,
    }
}

/// The export document of `group` (`None`: every group); passwords only with `secrets`.
pub(crate) fn export(s: &State, group: Option<&GroupId>, secrets: bool) -> Document {
    let groups = s
        .groups
        .values()
        .filter(|g| group.is_none_or(|want| &g.id == want))
        .map(|g| {
            let id = &g.id;
            let mut sca: Vec<ScaDoc> = s
                .users_of(id)
                .flat_map(|u| s.scas_of_user(id, &u.extension))
                .map(sca_doc)
                .collect();
            sca.sort_by(|a, b| a.line_port.cmp(&b.line_port));
            GroupDoc {
                group: g.clone(),
                users: s.users_of(id).map(|u| user_input(u, secrets)).collect(),
                key_profiles: s
                    .key_profiles_of(id)
                    .map(|p| KeyProfileInput {
                        name: p.name.clone(),
                        keys: p.keys.clone(),
                    })
                    .collect(),
                devices: s.devices_of(id).map(|d| device_doc(d, secrets)).collect(),
                sca,
                shared_lines: s
                    .shared_lines_of(id)
                    .map(|l| SharedLineDoc {
                        number: l.number.clone(),
                        direct_dial: l.direct_dial.clone(),
                        description: l.description.clone(),
                        forward_to_voicemail: l.forward_to_voicemail,
                        autodial_digits: l.autodial_digits.clone(),
                        members: l.members.clone(),
                        password: secrets.then(|| l.password.expose().to_string()),
                    })
                    .collect(),
            }
        })
        .collect();
    Document {
        format: FORMAT.to_string(),
        version: 1,
        groups,
    }
}

impl Document {
    /// The rows of the document in the order they depend on each other: each group, then its
    /// users, devices, SCA endpoints and shared lines; `at` is the JSON pointer of the row.
    pub(crate) fn into_rows(self) -> Result<Vec<ImportRow>, DomainError> {
        if self.format != FORMAT || self.version != 1 {
            return Err(DomainError::validation(
                "format",
                format!("not a {FORMAT} document of version 1"),
            ));
        }
        let mut rows = Vec::new();
        for (i, gd) in self.groups.into_iter().enumerate() {
            let g = gd.group.id.clone();
            let at = |what: &str, n: usize| format!("/groups/{i}/{what}/{n}");
            rows.push(ImportRow {
                at: format!("/groups/{i}/group"),
                op: ImportOp::Group(gd.group),
            });
            for (n, u) in gd.users.into_iter().enumerate() {
                rows.push(ImportRow {
                    at: at("users", n),
                    op: ImportOp::User(g.clone(), u),
                });
            }
            for (n, p) in gd.key_profiles.into_iter().enumerate() {
                rows.push(ImportRow {
                    at: at("key_profiles", n),
                    op: ImportOp::KeyProfile(g.clone(), p),
                });
            }
            for (n, d) in gd.devices.into_iter().enumerate() {
                let input = DeviceInput {
                    mac: Some(d.mac),
                    name: d.name,
                    model: d.model,
                    owner: d.owner,
                    keys: d.keys,
                    settings: d.settings,
                    notify_target: d.notify_target,
                    expansion_modules: d.expansion_modules,
                    key_profile: d.key_profile,
                };
                rows.push(ImportRow {
                    at: at("devices", n),
                    op: ImportOp::Device(g.clone(), input, d.prov_password),
                });
            }
            for (n, x) in gd.sca.into_iter().enumerate() {
                let input = ScaInput {
                    line_port: x.line_port,
                    device: x.device,
                    key: x.key,
                    label: x.label,
                    active: x.active,
                    allow_origination: x.allow_origination,
                    allow_termination: x.allow_termination,
                };
                rows.push(ImportRow {
                    at: at("sca", n),
                    op: ImportOp::Sca(g.clone(), x.extension, input),
                });
            }
            for (n, l) in gd.shared_lines.into_iter().enumerate() {
                let input = SharedLineInput {
                    number: l.number,
                    direct_dial: l.direct_dial,
                    description: l.description,
                    forward_to_voicemail: l.forward_to_voicemail,
                    autodial_digits: l.autodial_digits,
                    members: l.members,
                };
                rows.push(ImportRow {
                    at: at("shared_lines", n),
                    op: ImportOp::SharedLine(g.clone(), input, l.password),
                });
            }
        }
        Ok(rows)
    }
}

// ---------------------------------------------------------------- CSV

/// The kinds of CSV file and their columns (the first of each is required).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CsvKind {
    Users,
    Devices,
    Sca,
    Members,
}

impl CsvKind {
    pub(crate) fn parse(s: &str) -> Result<CsvKind, DomainError> {
        match s {
            "users" => Ok(CsvKind::Users),
            "devices" => Ok(CsvKind::Devices),
            "sca" => Ok(CsvKind::Sca),
            "members" => Ok(CsvKind::Members),
            _ => Err(DomainError::not_found(format!(
                "no CSV import of kind '{s}' (users, devices, sca or members)"
            ))),
        }
    }

    /// Every column, in the order `export` writes them.
    pub(crate) fn columns(self) -> &'static [&'static str] {
        match self {
            CsvKind::Users => &[
                "extension",
                "first_name",
                "last_name",
                "phone_number",
                "display_name",
                "kind",
                "sip_username",
                "sip_auth_username",
                "sip_password",
            ],
            CsvKind::Devices => &[
                "mac",
                "model",
                "name",
                "owner",
                "notify_target",
                "prov_password",
            ],
            CsvKind::Sca => &[
                "extension",
                "device",
                "line_port",
                "key",
                "label",
                "active",
                "allow_origination",
                "allow_termination",
            ],
            CsvKind::Members => &["number", "extension", "button", "ring"],
        }
    }

    /// The columns a row must have a value in.
    fn required(self) -> &'static [&'static str] {
        match self {
            CsvKind::Users => &["extension"],
            CsvKind::Devices => &["mac", "model"],
            CsvKind::Sca => &["extension", "device"],
            CsvKind::Members => &["number", "extension"],
        }
    }
}

/// Splits CSV text (RFC 4180: `"` quotes, `""` inside quotes, CRLF or LF) into records, each
/// with the line it starts on. Blank lines are skipped.
pub(crate) fn parse_csv(text: &str) -> Result<Vec<(usize, Vec<String>)>, RowError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let mut line = 1;
    let mut start = 1;
    let mut field = String::new();
    let mut record: Vec<String> = Vec::new();
    let mut quoted = false;
    let mut was_quoted = false;
    let mut chars = text.chars().peekable();
    let finish = |record: &mut Vec<String>, out: &mut Vec<(usize, Vec<String>)>, start| {
        let r = std::mem::take(record);
        if !(r.len() == 1 && r[0].is_empty()) {
            out.push((start, r));
        }
    };
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push('\n');
                }
                c => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !was_quoted => {
                quoted = true;
                was_quoted = true;
            }
            '"' => {
                return Err(csv_error(line, "a quote inside an unquoted field"));
            }
            ',' => {
                record.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                record.push(std::mem::take(&mut field));
                was_quoted = false;
                finish(&mut record, &mut out, start);
                line += 1;
                start = line;
            }
            c => field.push(c),
        }
    }
    if quoted {
        return Err(csv_error(start, "a quoted field is not closed"));
    }
    if !field.is_empty() || !record.is_empty() || was_quoted {
        record.push(field);
        finish(&mut record, &mut out, start);
    }
    Ok(out)
}

fn csv_error(line: usize, detail: impl Into<String>) -> RowError {
    RowError {
        at: format!("line {line}"),
        code: ErrorCode::Validation,
        detail: detail.into(),
        field: None,
    }
}

/// One CSV record by column name; absent columns are `None`, empty cells `Some("")`.
struct Cells<'a> {
    header: &'a [String],
    values: &'a [String],
}

impl Cells<'_> {
    fn get(&self, col: &str) -> Option<&str> {
        let i = self.header.iter().position(|h| h == col)?;
        Some(self.values.get(i).map(|v| v.trim()).unwrap_or(""))
    }
    /// `Some(None)`: the column is there and empty; `None`: the column is not in the file.
    fn opt(&self, col: &str) -> Option<Option<&str>> {
        self.get(col).map(|v| (!v.is_empty()).then_some(v))
    }
    fn req(&self, col: &str) -> &str {
        self.get(col).unwrap_or("")
    }
}

fn field(e: DomainError, col: &str) -> DomainError {
    let f = e.field.clone();
    e.with_field(f.as_deref().unwrap_or(col))
}

fn parse_bool(col: &str, v: &str) -> Result<bool, DomainError> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(DomainError::validation(
            col,
            format!("{col} '{v}' is not true or false"),
        )),
    }
}

fn parse_key(col: &str, v: &str) -> Result<KeyNo, DomainError> {
    v.parse()
        .map_err(|_| DomainError::validation(col, format!("{col} '{v}' is not a key number")))
}

fn enum_value<T: serde::de::DeserializeOwned>(col: &str, v: &str) -> Result<T, DomainError> {
    serde_json::from_value(serde_json::Value::String(v.to_string()))
        .map_err(|_| DomainError::validation(col, format!("{col} '{v}' is not a valid value")))
}

/// The rows of a CSV file of `kind` for group `g`, merged with what `s` stores for objects that
/// exist (columns not in the file keep their values); every bad record is reported.
pub(crate) fn csv_rows(
    s: &State,
    g: &GroupId,
    kind: CsvKind,
    text: &str,
) -> Result<Vec<ImportRow>, Vec<RowError>> {
    let records = parse_csv(text).map_err(|e| vec![e])?;
    let Some(((_, header), body)) = records.split_first() else {
        return Err(vec![csv_error(
            1,
            "the file is empty: a header row is required",
        )]);
    };
    let header: Vec<String> = header.iter().map(|h| h.trim().to_string()).collect();
    let mut errors = Vec::new();
    for h in &header {
        if !kind.columns().contains(&h.as_str()) {
            errors.push(RowError {
                field: Some(h.clone()),
                ..csv_error(
                    1,
                    format!(
                        "unknown column '{h}' (columns: {})",
                        kind.columns().join(", ")
                    ),
                )
            });
        }
    }
    for r in kind.required() {
        if !header.iter().any(|h| h == r) {
            errors.push(RowError {
                field: Some(r.to_string()),
                ..csv_error(1, format!("the header has no '{r}' column"))
            });
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut rows = Vec::new();
    // Members: one row per shared line, at the line of its first member.
    let mut members: BTreeMap<SharedNumber, (usize, Vec<Member>)> = BTreeMap::new();
    for (line, values) in body {
        let c = Cells {
            header: &header,
            values,
        };
        if values.len() > header.len() {
            errors.push(csv_error(
                *line,
                format!("{} cells for {} columns", values.len(), header.len()),
            ));
            continue;
        }
        let at = format!("line {line}");
        let op = match kind {
            CsvKind::Users => user_row(s, g, &c),
            CsvKind::Devices => device_row(s, g, &c),
            CsvKind::Sca => sca_row(s, g, &c),
            CsvKind::Members => match member_row(&c) {
                Ok((n, m)) => {
                    members.entry(n).or_insert((*line, Vec::new())).1.push(m);
                    continue;
                }
                Err(e) => Err(e),
            },
        };
        match op {
            Ok(op) => rows.push(ImportRow { at, op }),
            Err(e) => errors.push(RowError {
                at,
                code: e.code,
                detail: e.detail,
                field: e.field,
            }),
        }
    }
    for (n, (line, m)) in members {
        rows.push(ImportRow {
            at: format!("line {line}"),
            op: ImportOp::Members(g.clone(), n, m),
        });
    }
    if errors.is_empty() {
        Ok(rows)
    } else {
        Err(errors)
    }
}

fn user_row(s: &State, g: &GroupId, c: &Cells) -> Result<ImportOp, DomainError> {
    let e = Extension::parse(c.req("extension")).map_err(|e| field(e, "extension"))?;
    let old = s.user(g, &e);
    let mut input = match old {
        Some(u) => user_input(u, false),
        None => UserInput {
            extension: e.clone(),
            phone_number: None,
            first_name: String::new(),
            last_name: String::new(),
            display_name: None,
            kind: UserKind::Standard,
            login_allowed: true,
            allowed_endpoints: AllowedEndpoints::default(),
            sip: SipInput::default(),
            features: Features::default(),
        },
    };
    if let Some(v) = c.get("first_name") {
        input.first_name = v.to_string();
    }
    if let Some(v) = c.get("last_name") {
        input.last_name = v.to_string();
    }
    if let Some(v) = c.opt("phone_number") {
        input.phone_number = v
            .map(PhoneNumber::parse)
            .transpose()
            .map_err(|e| field(e, "phone_number"))?;
    }
    if let Some(v) = c.opt("display_name") {
        input.display_name = v.map(str::to_string);
    }
    if let Some(v) = c.opt("kind") {
        input.kind = v.map_or(Ok(UserKind::Standard), |v| enum_value("kind", v))?;
    }
    if let Some(v) = c.opt("sip_username") {
        input.sip.username = v.map(str::to_string);
    }
    if let Some(v) = c.opt("sip_auth_username") {
        input.sip.auth_username = v.map(str::to_string);
    }
    if let Some(Some(v)) = c.opt("sip_password") {
        input.sip.password = Some(v.to_string());
    }
    Ok(ImportOp::User(g.clone(), input))
}

fn device_row(s: &State, g: &GroupId, c: &Cells) -> Result<ImportOp, DomainError> {
    let mac = Mac::parse(c.req("mac")).map_err(|e| field(e, "mac"))?;
    let old = s.devices.get(&mac).filter(|d| &d.group == g);
    let mut input = match old {
        Some(d) => {
            let doc = device_doc(d, false);
            DeviceInput {
                mac: Some(doc.mac),
                name: doc.name,
                model: doc.model,
                owner: doc.owner,
                keys: doc.keys,
                settings: doc.settings,
                notify_target: doc.notify_target,
                expansion_modules: doc.expansion_modules,
                key_profile: doc.key_profile,
            }
        }
        None => DeviceInput {
            mac: Some(mac.clone()),
            name: None,
            model: String::new(),
            owner: None,
            keys: Vec::new(),
            settings: BTreeMap::new(),
            notify_target: None,
            expansion_modules: Vec::new(),
            key_profile: None,
        },
    };
    input.model = c.req("model").to_string();
    if let Some(v) = c.opt("name") {
        input.name = v.map(str::to_string);
    }
    if let Some(v) = c.opt("owner") {
        input.owner = v
            .map(Extension::parse)
            .transpose()
            .map_err(|e| field(e, "owner"))?;
    }
    if let Some(v) = c.opt("notify_target") {
        input.notify_target = v.map(NotifyTarget::parse).transpose()?;
    }
    let pw = c.opt("prov_password").flatten().map(str::to_string);
    Ok(ImportOp::Device(g.clone(), input, pw))
}

fn sca_row(s: &State, g: &GroupId, c: &Cells) -> Result<ImportOp, DomainError> {
    let e = Extension::parse(c.req("extension")).map_err(|e| field(e, "extension"))?;
    let device = c.req("device").to_string();
    let line_port = c.opt("line_port").flatten().map(str::to_string);
    // A stored endpoint the row is about keeps the values of columns not in the file.
    let old = match &line_port {
        Some(p) => LinePort::parse(p).ok().and_then(|p| s.scas.get(&p)),
        None => {
            let mac = s
                .device_by_name(g, &device)
                .map(|d| d.mac.clone())
                .or_else(|| Mac::parse(&device).ok());
            s.scas_of_user(g, &e)
                .find(|x| Some(&x.device) == mac.as_ref())
        }
    }
    .filter(|x| &x.group == g && x.extension == e);
    let bool_col = |col: &str, stored: Option<bool>| -> Result<bool, DomainError> {
        match c.opt(col) {
            Some(Some(v)) => parse_bool(col, v),
            Some(None) => Ok(true),
            None => Ok(stored.unwrap_or(true)),
        }
    };
    let key = match c.opt("key") {
        Some(v) => v.map(|v| parse_key("key", v)).transpose()?,
        None => old.map(|x| x.key),
    };
    let label = match c.opt("label") {
        Some(v) => v.map(str::to_string),
        None => old.and_then(|x| x.label.clone()),
    };
    let input = ScaInput {
        line_port: line_port.or_else(|| old.map(|x| x.line_port.to_string())),
        device,
        key,
        label,
        active: bool_col("active", old.map(|x| x.active))?,
        allow_origination: bool_col("allow_origination", old.map(|x| x.allow_origination))?,
        allow_termination: bool_col("allow_termination", old.map(|x| x.allow_termination))?,
    };
    Ok(ImportOp::Sca(g.clone(), e, input))
}

fn member_row(c: &Cells) -> Result<(SharedNumber, Member), DomainError> {
    let n = SharedNumber::parse(c.req("number")).map_err(|e| field(e, "number"))?;
    let extension = Extension::parse(c.req("extension")).map_err(|e| field(e, "extension"))?;
    let button = c
        .opt("button")
        .flatten()
        .map(|v| parse_key("button", v))
        .transpose()?;
    let ring = c
        .opt("ring")
        .flatten()
        .map(|v| enum_value("ring", v))
        .transpose()?
        .unwrap_or_default();
    Ok((
        n,
        Member {
            extension,
            button,
            ring,
        },
    ))
}

/// Quotes a CSV cell when it needs it.
fn cell(v: &str) -> String {
    if v.contains([',', '"', '\n', '\r']) || v.starts_with(' ') || v.ends_with(' ') {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}

/// A CSV file of `kind` for group `g`, with every column (passwords only with `secrets`);
/// importing it back changes nothing.
pub(crate) fn export_csv(s: &State, g: &GroupId, kind: CsvKind, secrets: bool) -> String {
    let mut out = kind.columns().join(",");
    out.push('\n');
    let mut row = |cells: Vec<String>| {
        let line: Vec<String> = cells.iter().map(|c| cell(c)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    };
    let opt = |v: Option<&str>| v.unwrap_or("").to_string();
    let secret = |p: &Secret| {
        if secrets {
            p.expose().to_string()
        } else {
            String::new()
        }
    };
    match kind {
        CsvKind::Users => {
            for u in s.users_of(g) {
                row(vec![
                    u.extension.to_string(),
                    u.first_name.to_string(),
                    u.last_name.to_string(),
                    u.phone_number
                        .as_ref()
                        .map(|p| p.to_string())
                        .unwrap_or_default(),
                    opt(u.display_name.as_deref()),
                    match u.kind {
                        UserKind::Standard => "standard",
                        UserKind::HotDesk => "hot_desk",
                    }
                    .to_string(),
                    opt(u.sip.username()),
                    opt(u.sip.auth_username()),
                    secret(&u.sip.password),
                ]);
            }
        }
        CsvKind::Devices => {
            for d in s.devices_of(g) {
                row(vec![
                    d.mac.to_string(),
                    d.model.to_string(),
                    d.name.to_string(),
                    d.owner.as_ref().map(|e| e.to_string()).unwrap_or_default(),
                    d.notify_target
                        .as_ref()
                        .map(|t| t.to_string())
                        .unwrap_or_default(),
                    secret(&d.prov_password),
                ]);
            }
        }
        CsvKind::Sca => {
            for u in s.users_of(g) {
                for x in s.scas_of_user(g, &u.extension) {
                    row(vec![
                        x.extension.to_string(),
                        x.device.to_string(),
                        x.line_port.to_string(),
                        x.key.to_string(),
                        opt(x.label.as_deref()),
                        x.active.to_string(),
                        x.allow_origination.to_string(),
                        x.allow_termination.to_string(),
                    ]);
                }
            }
        }
        CsvKind::Members => {
            for l in s.shared_lines_of(g) {
                for m in &l.members {
                    row(vec![
                        l.number.to_string(),
                        m.extension.to_string(),
                        m.button.map(|b| b.to_string()).unwrap_or_default(),
                        match m.ring {
                            Ring::Ring => "ring",
                            Ring::NoRing => "no_ring",
                            Ring::Delayed => "delayed",
                        }
                        .to_string(),
                    ]);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_records_carry_the_line_they_start_on() {
        let recs = parse_csv("a,b\r\n\"x, \"\"y\"\"\",2\n\n\"multi\nline\",3\nlast,4").unwrap();
        assert_eq!(recs[0], (1, vec!["a".into(), "b".into()]));
        assert_eq!(recs[1], (2, vec!["x, \"y\"".into(), "2".into()]));
        assert_eq!(recs[2], (4, vec!["multi\nline".into(), "3".into()]));
        assert_eq!(recs[3], (6, vec!["last".into(), "4".into()]));
    }

    #[test]
    fn an_unclosed_quote_is_reported_at_its_line() {
        let e = parse_csv("a\n\"open\n").unwrap_err();
        assert_eq!(e.at, "line 2");
    }

    #[test]
    fn cells_that_need_quotes_get_them() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        let recs = parse_csv(&format!("{},{}\n", cell("a,b"), cell("q\""))).unwrap();
        assert_eq!(recs[0].1, vec!["a,b".to_string(), "q\"".to_string()]);
    }
}
