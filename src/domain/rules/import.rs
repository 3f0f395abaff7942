//! Import (SPEC §4 `/import`): many rows applied in one transaction through the rules of the
//! sibling modules, so an imported object is validated exactly as one made through the API.
//!
//! Every row says how an object should be (create it, or bring the stored one to that), so a
//! second run of the same rows changes nothing. Each row runs as a nested [`Tx::step`]: a bad
//! row is undone and reported (where it is, its problem code) and the others still run, so the
//! report lists every bad row; the caller then writes nothing unless the report has no error.

use super::*;

/// What one row asks for.
#[derive(Clone, Debug)]
pub(crate) enum ImportOp {
    Group(Group),
    User(GroupId, UserInput),
    KeyProfile(GroupId, KeyProfileInput),
    /// A device and the provisioning password to keep (`None`: the stored one, or a new one).
    Device(GroupId, DeviceInput, Option<String>),
    Sca(GroupId, Extension, ScaInput),
    /// A shared line and the SIP password to keep (`None`: the stored one, or a new one).
    SharedLine(GroupId, SharedLineInput, Option<String>),
    /// A shared line's whole member list.
    Members(GroupId, SharedNumber, Vec<Member>),
}

impl ImportOp {
    fn group(&self) -> &GroupId {
        match self {
            ImportOp::Group(g) => &g.id,
            ImportOp::User(g, _)
            | ImportOp::KeyProfile(g, _)
            | ImportOp::Device(g, _, _)
            | ImportOp::Sca(g, _, _)
            | ImportOp::SharedLine(g, _, _)
            | ImportOp::Members(g, _, _) => g,
        }
    }
}

/// One row and where it came from (`line 7` of a CSV file, `/groups/0/users/3` of a document).
#[derive(Clone, Debug)]
pub(crate) struct ImportRow {
    pub(crate) at: String,
    pub(crate) op: ImportOp,
}

/// What a row did (or, in a dry run, would do).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    Created,
    Changed,
    Unchanged,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct RowOutcome {
    pub(crate) at: String,
    /// E.g. `user acme/1001`, `device 0004f2000001`.
    pub(crate) object: String,
    pub(crate) outcome: Outcome,
}

/// A bad row: where it is and the problem, with the code the API would answer for it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct RowError {
    pub(crate) at: String,
    pub(crate) code: ErrorCode,
    pub(crate) detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) field: Option<String>,
}

/// A password the import generated, shown in this report only.
#[derive(Clone, Serialize, ToSchema)]
pub(crate) struct GeneratedSecret {
    pub(crate) object: String,
    pub(crate) username: String,
    pub(crate) password: String,
}

impl std::fmt::Debug for GeneratedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GeneratedSecret({}, <redacted>)", self.object)
    }
}

/// The report of an import: counts, every row's outcome, generated passwords, bad rows.
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub(crate) struct ImportReport {
    pub(crate) dry_run: bool,
    /// The change-log entry of the import; `None` when nothing changed, in a dry run, or when
    /// a row was bad (then nothing is written).
    pub(crate) seq: Option<u64>,
    pub(crate) created: usize,
    pub(crate) changed: usize,
    pub(crate) unchanged: usize,
    pub(crate) rows: Vec<RowOutcome>,
    /// Passwords generated for new users, devices and shared lines (shown once).
    pub(crate) passwords: Vec<GeneratedSecret>,
    pub(crate) errors: Vec<RowError>,
}

impl ImportReport {
    fn count(&mut self, at: String, object: String, outcome: Outcome) {
        match outcome {
            Outcome::Created => self.created += 1,
            Outcome::Changed => self.changed += 1,
            Outcome::Unchanged => self.unchanged += 1,
        }
        self.rows.push(RowOutcome {
            at,
            object,
            outcome,
        });
    }
}

/// What one applied row gives back.
struct Applied {
    object: String,
    outcome: Outcome,
    fx: Option<Effect>,
    secret: Option<GeneratedSecret>,
}

/// Applies `rows` in order, each through its rule; fills `report` and returns the one effect
/// the change log records for them all (every touched device once), or `None` when no row
/// changed anything. The caller must not commit when `report.errors` is not empty.
pub(crate) fn import(
    tx: &mut Tx,
    env: &dyn Env,
    rows: Vec<ImportRow>,
    report: &mut ImportReport,
) -> Option<Effect> {
    let mut groups: BTreeSet<GroupId> = BTreeSet::new();
    let mut kind: Option<ChangeKind> = None;
    let mut devices = BTreeSet::new();
    // Users created with BLF monitoring: created without it first, since they may monitor a
    // user of a later row; their monitoring is applied after every row.
    let mut deferred: Vec<(String, GroupId, UserInput)> = Vec::new();
    for row in rows {
        groups.insert(row.op.group().clone());
        let at = row.at;
        match tx.step(|t| apply(t, env, row.op, &mut deferred, &at)) {
            Ok(a) => {
                if a.outcome != Outcome::Unchanged {
                    if let Some(fx) = a.fx {
                        absorb(&mut kind, &mut devices, fx);
                    }
                }
                if let Some(s) = a.secret {
                    report.passwords.push(s);
                }
                report.count(at, a.object, a.outcome);
            }
            Err(e) => report.errors.push(row_error(at, e)),
        }
    }
    for (at, g, input) in deferred {
        let e = input.extension.clone();
        // Counted with its row already: only its effect is taken.
        match tx.step(|t| update_user(t, env, &g, &e, input)) {
            Ok((fx, _)) => absorb(&mut kind, &mut devices, fx),
            Err(e) => report.errors.push(row_error(at, e)),
        }
    }
    let kind = kind?;
    let group = (groups.len() == 1)
        .then(|| groups.into_iter().next())
        .flatten();
    let mut fx = Effect::new(Action::Import, kind, group.as_ref(), "import").detail(json!({
        "created": report.created,
        "changed": report.changed,
        "unchanged": report.unchanged,
    }));
    fx.devices = devices;
    Some(fx)
}

fn absorb(kind: &mut Option<ChangeKind>, devices: &mut BTreeSet<Mac>, fx: Effect) {
    *kind = Some(kind.map_or(fx.kind, |k| k.and(fx.kind)));
    devices.extend(fx.devices);
}

fn row_error(at: String, e: DomainError) -> RowError {
    RowError {
        at,
        code: e.code,
        detail: e.detail,
        field: e.field,
    }
}

/// The outcome of a row on record `key` that was `before` it ran.
fn outcome(tx: &Tx, key: &RecordKey, before: &Option<Record>) -> Outcome {
    match before {
        None => Outcome::Created,
        Some(b) => {
            if tx.state().get(key).as_ref() == Some(b) {
                Outcome::Unchanged
            } else {
                Outcome::Changed
            }
        }
    }
}

fn unchanged(object: String) -> Applied {
    Applied {
        object,
        outcome: Outcome::Unchanged,
        fx: None,
        secret: None,
    }
}

/// Whether a user row asks for exactly what is stored (then its rule would write the same
/// record, and is not run: a rerun of a large import stays fast).
fn same_user(u: &User, i: &UserInput) -> bool {
    u.phone_number == i.phone_number
        && u.first_name == i.first_name
        && u.last_name == i.last_name
        && u.display_name.as_deref() == i.display_name.as_deref()
        && u.kind == i.kind
        && u.login_allowed == i.login_allowed
        && u.allowed_endpoints == i.allowed_endpoints
        && u.sip.username() == i.sip.username.as_deref()
        && u.sip.auth_username() == i.sip.auth_username.as_deref()
        && i.sip
            .password
            .as_deref()
            .is_none_or(|p| p == u.sip.password.expose())
        && u.features == i.features
}

/// Whether a device row asks for exactly what is stored (see [`same_user`]).
fn same_device(d: &Device, g: &GroupId, i: &DeviceInput, pw: Option<&str>) -> bool {
    &d.group == g
        && i.name.as_deref().unwrap_or(d.mac.as_str()) == d.name
        && i.model == d.model
        && i.owner == d.owner
        && i.keys == d.keys
        && i.settings == d.settings
        && i.notify_target.as_ref() == d.notify_target.as_deref()
        && i.expansion_modules[..] == d.expansion_modules[..]
        && i.key_profile.as_ref() == d.key_profile.as_deref()
        && pw.is_none_or(|p| p == d.prov_password.expose())
}

fn apply(
    tx: &mut Tx,
    env: &dyn Env,
    op: ImportOp,
    deferred: &mut Vec<(String, GroupId, UserInput)>,
    at: &str,
) -> Result<Applied, DomainError> {
    match op {
        ImportOp::Group(g) => {
            let key = RecordKey::Group(g.id.clone());
            let before = tx.state().get(&key);
            let object = format!("group {}", g.id);
            let fx = match &before {
                Some(Record::Group(old)) if *old == g => None,
                Some(_) => Some(update_group(tx, &g.id.clone(), g)?),
                None => Some(create_group(tx, g)?),
            };
            Ok(Applied {
                outcome: outcome(tx, &key, &before),
                object,
                fx,
                secret: None,
            })
        }
        ImportOp::User(g, mut input) => {
            let e = input.extension.clone();
            let key = RecordKey::User(g.clone(), e.clone());
            let before = tx.state().get(&key);
            let generate = before.is_none() && input.sip.password.is_none();
            if let Some(Record::User(old)) = &before {
                if same_user(old, &input) {
                    return Ok(unchanged(format!("user {g}/{e}")));
                }
            }
            let fx = if before.is_some() {
                update_user(tx, env, &g, &e, input)?.0
            } else if input.features.monitoring.is_empty() {
                create_user(tx, env, &g, input)?.0
            } else {
                let full = input.clone();
                input.features.monitoring.clear();
                let fx = create_user(tx, env, &g, input)?.0;
                deferred.push((at.to_string(), g.clone(), full));
                fx
            };
            let secret = generate
                .then(|| tx.state().user(&g, &e))
                .flatten()
                .map(|u| GeneratedSecret {
                    object: format!("user {g}/{e}"),
                    username: u.auth_username(),
                    password: u.sip.password.expose().to_string(),
                });
            Ok(Applied {
                outcome: outcome(tx, &key, &before),
                object: format!("user {g}/{e}"),
                fx: Some(fx),
                secret,
            })
        }
        ImportOp::KeyProfile(g, input) => {
            let n = input.name.clone();
            let key = RecordKey::KeyProfile(g.clone(), n.clone());
            let before = tx.state().get(&key);
            let object = format!("key_profile {g}/{n}");
            let fx = match &before {
                Some(Record::KeyProfile(old)) if old.keys == input.keys => None,
                Some(_) => Some(update_key_profile(tx, env, &g, &n, input)?.0),
                None => Some(create_key_profile(tx, &g, input)?.0),
            };
            Ok(Applied {
                outcome: outcome(tx, &key, &before),
                object,
                fx,
                secret: None,
            })
        }
        ImportOp::Device(g, input, pw) => {
            let Some(mac) = input.mac.clone() else {
                return Err(DomainError::validation(
                    "mac",
                    "an imported device names its MAC",
                ));
            };
            let key = RecordKey::Device(mac.clone());
            let before = tx.state().get(&key);
            if let Some(Record::Device(d)) = &before {
                if same_device(d, &g, &input, pw.as_deref()) {
                    return Ok(unchanged(format!("device {mac}")));
                }
            }
            let fx = match &before {
                Some(Record::Device(d)) if d.group != g => {
                    return Err(DomainError::conflict(
                        ErrorCode::AlreadyExists,
                        format!("MAC {mac} is already provisioned"),
                    )
                    .with_field("mac"))
                }
                Some(_) => update_device(tx, env, &mac, input)?.0,
                None => create_device(tx, env, &g, input)?.0,
            };
            if let Some(pw) = &pw {
                password("prov_password", pw)?;
                if let Some(d) = tx.state().devices.get(&mac) {
                    let mut d = d.clone();
                    d.prov_password = Secret::new(pw.as_str());
                    tx.put(Record::Device(d));
                }
            }
            let secret = (before.is_none() && pw.is_none())
                .then(|| tx.state().devices.get(&mac))
                .flatten()
                .map(|d| GeneratedSecret {
                    object: format!("device {mac}"),
                    username: mac.to_string(),
                    password: d.prov_password.expose().to_string(),
                });
            Ok(Applied {
                outcome: outcome(tx, &key, &before),
                object: format!("device {mac}"),
                fx: Some(fx),
                secret,
            })
        }
        ImportOp::Sca(g, e, input) => {
            let s = tx.state();
            let existing = match &input.line_port {
                Some(p) => LinePort::parse(p)
                    .ok()
                    .and_then(|p| s.scas.get(&p))
                    .filter(|x| x.group == g && x.extension == e),
                None => {
                    let named = s.device_by_name(&g, &input.device).map(|d| d.mac.clone());
                    let mac = named.or_else(|| Mac::parse(&input.device).ok());
                    s.scas_of_user(&g, &e)
                        .find(|x| Some(&x.device) == mac.as_ref())
                }
            }
            .map(|x| x.line_port.clone());
            let (fx, x) = match existing {
                Some(port) => {
                    let before = tx.state().get(&RecordKey::Sca(port.clone()));
                    let (fx, x) = update_sca(tx, env, &g, &e, port.as_str(), input)?;
                    (fx, (x, before))
                }
                None => {
                    let (fx, x) = create_sca(tx, env, &g, &e, input)?;
                    (fx, (x, None))
                }
            };
            let (x, before) = x;
            let key = RecordKey::Sca(x.line_port.clone());
            Ok(Applied {
                outcome: outcome(tx, &key, &before),
                object: format!("sca {}", x.line_port),
                fx: Some(fx),
                secret: None,
            })
        }
        ImportOp::SharedLine(g, input, pw) => {
            let n = input.number.clone();
            let key = RecordKey::SharedLine(g.clone(), n.clone());
            let before = tx.state().get(&key);
            let fx = if before.is_some() {
                update_shared_line(tx, env, &g, &n, input)?.0
            } else {
                create_shared_line(tx, env, &g, input)?.0
            };
            if let Some(pw) = &pw {
                password("password", pw)?;
                if let Some(l) = tx.state().shared_lines.get(&(g.clone(), n.clone())) {
                    let mut l = l.clone();
                    l.password = Secret::new(pw.as_str());
                    tx.put(Record::SharedLine(l));
                }
            }
            let secret = (before.is_none() && pw.is_none())
                .then(|| tx.state().shared_lines.get(&(g.clone(), n.clone())))
                .flatten()
                .map(|l| GeneratedSecret {
                    object: format!("shared_line {g}/{n}"),
                    username: l.line_port(),
                    password: l.password.expose().to_string(),
                });
            Ok(Applied {
                outcome: outcome(tx, &key, &before),
                object: format!("shared_line {g}/{n}"),
                fx: Some(fx),
                secret,
            })
        }
        ImportOp::Members(g, n, members) => {
            let key = RecordKey::SharedLine(g.clone(), n.clone());
            let before = tx.state().get(&key);
            if before.is_none() {
                return Err(DomainError::not_found(format!(
                    "shared line {n} does not exist in group {g}"
                ))
                .with_field("number"));
            }
            let fx = set_members(tx, env, &g, &n, members)?.0;
            Ok(Applied {
                outcome: outcome(tx, &key, &before),
                object: format!("members {g}/{n}"),
                fx: Some(fx),
                secret: None,
            })
        }
    }
}
