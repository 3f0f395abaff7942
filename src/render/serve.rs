//! The phone read path: which bytes a phone gets for a file name.
//!
//! [`serve_file`] is the one function that answers it; the phone listener, the admin preview and
//! `deskprov render` all call it, so a preview or the CLI can never show other bytes than the
//! phone receives. File name → catalogue ([`resolve`]) → device and group → `authorize` (the
//! caller's policy: the phone listener checks credentials, the preview and the CLI allow) →
//! template → bytes, from the render cache when nothing changed.

use std::sync::Arc;

use super::{resolve, RenderError, Rendered, Renderer, Target};
use crate::catalog::Model;
use crate::domain::state::State;
use crate::domain::{Device, Group, Mac};

/// What a file name gives.
#[derive(Debug)]
pub(crate) enum Outcome<'s, D> {
    /// No model of the catalogue requests this name (or the device's group is gone).
    NotFound,
    /// A well-formed per-device name whose MAC is not provisioned for a model requesting it.
    Unknown(Mac),
    /// The device exists and `authorize` refused it.
    Denied(D),
    /// The bytes. `device` is set for a per-device file; `main` when that file is the device's
    /// main file (the one whose fetch confirms a revision).
    File {
        file: Arc<Rendered>,
        model: &'s Model,
        device: Option<&'s Device>,
        main: bool,
    },
    /// The template failed for this file.
    Failed(RenderError),
}

/// The bytes for `name` as of `state`. `ua_model` is the model the client claims (it picks
/// among models sharing a common file name); `authorize` runs before any per-device rendering.
pub(crate) fn serve_file<'s, D>(
    renderer: &'s Renderer,
    state: &'s State,
    name: &'s str,
    ua_model: Option<&str>,
    authorize: impl FnOnce(&Device, &Group) -> Result<(), D>,
) -> Outcome<'s, D> {
    match resolve(renderer.catalog(), state, name, ua_model) {
        None => Outcome::NotFound,
        Some(Target::Unknown(mac)) => Outcome::Unknown(mac),
        Some(Target::Common { model, spec }) => match renderer.render_common(model, spec) {
            Ok(file) => Outcome::File {
                file,
                model,
                device: None,
                main: false,
            },
            Err(e) => Outcome::Failed(e),
        },
        Some(Target::Device { mac, model, spec }) => {
            let Some(device) = state.devices.get(&mac) else {
                return Outcome::NotFound;
            };
            let Some(group) = state.groups.get(&device.group) else {
                return Outcome::NotFound;
            };
            if let Err(d) = authorize(device, group) {
                return Outcome::Denied(d);
            }
            match renderer.render_device(state, device, spec) {
                Ok(file) => Outcome::File {
                    file,
                    model,
                    device: Some(device),
                    main: model.main_file().is_some_and(|f| f.pattern == spec.pattern),
                },
                Err(e) => Outcome::Failed(e),
            }
        }
    }
}

/// What a device gets for `name`, for the admin preview and the CLI: the same bytes as the
/// phone, refused when the name is not one of that device's files (or its model's common files).
pub fn device_file(
    renderer: &Renderer,
    state: &State,
    mac: &Mac,
    name: &str,
) -> Result<Arc<Rendered>, Preview> {
    let device = state.devices.get(mac).ok_or(Preview::NotFound)?;
    let allow = |_: &Device, _: &Group| Ok::<(), std::convert::Infallible>(());
    match serve_file(renderer, state, name, Some(&device.model), allow) {
        Outcome::File {
            file,
            model,
            device: d,
            ..
        } => match d {
            Some(d) if &d.mac == mac => Ok(file),
            None if model.id == device.model => Ok(file),
            _ => Err(Preview::NotFound),
        },
        Outcome::Failed(e) => Err(Preview::Failed(e)),
        Outcome::NotFound | Outcome::Unknown(_) | Outcome::Denied(_) => Err(Preview::NotFound),
    }
}

/// Why [`device_file`] gave no bytes.
#[derive(Debug)]
pub enum Preview {
    /// Not a file this device requests.
    NotFound,
    /// The template failed.
    Failed(RenderError),
}
