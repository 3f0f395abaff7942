//! Uploaded templates (SPEC §1 "Templates"): versions, rollback and reset to the built-in.

use super::*;

/// Devices of a model (a template change touches all of them).
fn devices_of_model(s: &State, model: &str) -> BTreeSet<Mac> {
    s.devices
        .values()
        .filter(|d| d.model == model)
        .map(|d| d.mac.clone())
        .collect()
}

/// Adds a validated template body as the next version of (model, template) and makes it live.
/// Validation (parse, sample render, XML) is the renderer's, done before this rule runs.
pub(crate) fn put_template(
    tx: &mut Tx,
    model: &str,
    template: &str,
    body: String,
    at: String,
    actor: &str,
) -> Result<(Effect, u32), DomainError> {
    let key = (model.to_string(), template.to_string());
    let mut o = tx
        .state()
        .templates
        .get(&key)
        .cloned()
        .unwrap_or(TemplateOverride {
            model: model.to_string(),
            template: template.to_string(),
            versions: vec![],
            active: None,
        });
    let version = o.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
    o.versions.push(TemplateVersion {
        version,
        body,
        created_at: at,
        actor: actor.to_string(),
    });
    o.active = Some(version);
    let mut fx = Effect::new(
        Action::TemplateUpdate,
        ChangeKind::Template,
        None,
        format!("{model}/{template}"),
    )
    .detail(json!({ "version": version }));
    fx.devices = devices_of_model(tx.state(), model);
    tx.put(Record::Template(o));
    Ok((fx, version))
}

/// Makes an earlier version live again (`None`: back to the built-in template).
pub(crate) fn activate_template(
    tx: &mut Tx,
    model: &str,
    template: &str,
    version: Option<u32>,
) -> Result<Effect, DomainError> {
    let key = (model.to_string(), template.to_string());
    let mut o = tx.state().templates.get(&key).cloned().ok_or_else(|| {
        DomainError::not_found(format!("{model}/{template} has no uploaded versions"))
    })?;
    if let Some(v) = version {
        if !o.versions.iter().any(|x| x.version == v) {
            return Err(DomainError::not_found(format!(
                "{model}/{template} has no version {v}"
            )));
        }
    } else if o.active.is_none() {
        return Err(DomainError::not_found(format!(
            "{model}/{template} already uses the built-in template"
        )));
    }
    o.active = version;
    let action = if version.is_some() {
        Action::TemplateRollback
    } else {
        Action::TemplateReset
    };
    let mut fx = Effect::new(
        action,
        ChangeKind::Template,
        None,
        format!("{model}/{template}"),
    )
    .detail(json!({ "version": version }));
    fx.devices = devices_of_model(tx.state(), model);
    tx.put(Record::Template(o));
    Ok(fx)
}
