//! The domain operations of the store: each runs one rule of [`crate::domain::rules`] through
//! [`Store::commit`], so every mutation is validated, logged and durable in the same way.

use super::{now, Change, Store, StoreError};
use crate::domain::rules::{self, *};
use crate::domain::*;

impl Store {
    pub fn create_group(&self, actor: &str, g: Group) -> Result<Change, StoreError> {
        Ok(self
            .commit(actor, |tx, _| Ok((rules::create_group(tx, g)?, ())))?
            .1)
    }
    pub(crate) fn update_group(
        &self,
        actor: &str,
        id: &GroupId,
        g: Group,
    ) -> Result<Change, StoreError> {
        Ok(self
            .commit(actor, |tx, _| Ok((rules::update_group(tx, id, g)?, ())))?
            .1)
    }
    pub(crate) fn delete_group(
        &self,
        actor: &str,
        id: &GroupId,
        cascade: bool,
    ) -> Result<Change, StoreError> {
        Ok(self
            .commit(actor, |tx, _| {
                Ok((rules::delete_group(tx, id, cascade)?, ()))
            })?
            .1)
    }

    pub fn create_user(
        &self,
        actor: &str,
        g: &GroupId,
        input: UserInput,
    ) -> Result<User, StoreError> {
        Ok(self
            .commit(actor, |tx, env| rules::create_user(tx, env, g, input))?
            .0)
    }
    pub(crate) fn update_user(
        &self,
        actor: &str,
        g: &GroupId,
        e: &Extension,
        input: UserInput,
    ) -> Result<User, StoreError> {
        Ok(self
            .commit(actor, |tx, env| rules::update_user(tx, env, g, e, input))?
            .0)
    }
    pub(crate) fn delete_user(
        &self,
        actor: &str,
        g: &GroupId,
        e: &Extension,
    ) -> Result<Change, StoreError> {
        Ok(self
            .commit(actor, |tx, _| Ok((rules::delete_user(tx, g, e)?, ())))?
            .1)
    }
    pub(crate) fn duplicate_user(
        &self,
        actor: &str,
        g: &GroupId,
        e: &Extension,
        input: DuplicateInput,
    ) -> Result<User, StoreError> {
        Ok(self
            .commit(actor, |tx, env| rules::duplicate_user(tx, env, g, e, input))?
            .0)
    }
    /// Returns the new password (the only time it is shown).
    pub(crate) fn rotate_sip_password(
        &self,
        actor: &str,
        g: &GroupId,
        e: &Extension,
    ) -> Result<String, StoreError> {
        Ok(self
            .commit(actor, |tx, env| rules::rotate_sip_password(tx, env, g, e))?
            .0)
    }

    /// `POST .../users/{ext}/third-party-credentials`: rotates the SIP password and returns it
    /// (the only time it is shown); 409 `endpoint_not_allowed` when third party is off.
    pub(crate) fn third_party_credentials(
        &self,
        actor: &str,
        g: &GroupId,
        e: &Extension,
    ) -> Result<String, StoreError> {
        Ok(self
            .commit(actor, |tx, env| {
                rules::third_party_credentials(tx, env, g, e)
            })?
            .0)
    }

    /// `POST .../users/{ext}/unregister`: the user's lines off its phones until its next change.
    pub(crate) fn unregister_user(
        &self,
        actor: &str,
        g: &GroupId,
        e: &Extension,
    ) -> Result<User, StoreError> {
        Ok(self
            .commit(actor, |tx, _| rules::unregister_user(tx, g, e))?
            .0)
    }

    pub fn create_device(
        &self,
        actor: &str,
        g: &GroupId,
        input: DeviceInput,
    ) -> Result<Device, StoreError> {
        Ok(self
            .commit(actor, |tx, env| rules::create_device(tx, env, g, input))?
            .0)
    }
    pub(crate) fn update_device(
        &self,
        actor: &str,
        mac: &Mac,
        input: DeviceInput,
    ) -> Result<Device, StoreError> {
        Ok(self
            .commit(actor, |tx, env| rules::update_device(tx, env, mac, input))?
            .0)
    }
    pub(crate) fn delete_device(&self, actor: &str, mac: &Mac) -> Result<Change, StoreError> {
        Ok(self
            .commit(actor, |tx, _| Ok((rules::delete_device(tx, mac)?, ())))?
            .1)
    }
    /// `POST /api/v1/devices/{mac}/provisioning-link`: new provisioning credentials of a
    /// softphone (the only time the password is shown).
    pub(crate) fn softphone_link_credentials(
        &self,
        actor: &str,
        mac: &Mac,
    ) -> Result<String, StoreError> {
        Ok(self
            .commit(actor, |tx, env| {
                rules::softphone_link_credentials(tx, env, mac)
            })?
            .0)
    }
    /// Returns the new provisioning password (the only time it is shown).
    pub(crate) fn rotate_device_credentials(
        &self,
        actor: &str,
        mac: &Mac,
    ) -> Result<String, StoreError> {
        Ok(self
            .commit(actor, |tx, env| {
                rules::rotate_device_credentials(tx, env, mac)
            })?
            .0)
    }
    pub(crate) fn hot_desk_login(
        &self,
        actor: &str,
        mac: &Mac,
        e: &Extension,
    ) -> Result<Change, StoreError> {
        Ok(self
            .commit(actor, |tx, env| {
                Ok((rules::hot_desk_login(tx, env, mac, e)?, ()))
            })?
            .1)
    }
    pub(crate) fn hot_desk_logout(&self, actor: &str, mac: &Mac) -> Result<Change, StoreError> {
        Ok(self
            .commit(actor, |tx, _| Ok((rules::hot_desk_logout(tx, mac)?, ())))?
            .1)
    }

    pub fn create_sca(
        &self,
        actor: &str,
        g: &GroupId,
        e: &Extension,
        input: ScaInput,
    ) -> Result<ScaEndpoint, StoreError> {
        Ok(self
            .commit(actor, |tx, env| rules::create_sca(tx, env, g, e, input))?
            .0)
    }
    pub(crate) fn update_sca(
        &self,
        actor: &str,
        g: &GroupId,
        e: &Extension,
        port: &str,
        input: ScaInput,
    ) -> Result<ScaEndpoint, StoreError> {
        Ok(self
            .commit(actor, |tx, env| {
                rules::update_sca(tx, env, g, e, port, input)
            })?
            .0)
    }
    pub(crate) fn delete_sca(
        &self,
        actor: &str,
        g: &GroupId,
        e: &Extension,
        port: &str,
    ) -> Result<Change, StoreError> {
        Ok(self
            .commit(actor, |tx, _| Ok((rules::delete_sca(tx, g, e, port)?, ())))?
            .1)
    }

    pub(crate) fn create_shared_line(
        &self,
        actor: &str,
        g: &GroupId,
        input: SharedLineInput,
    ) -> Result<SharedLine, StoreError> {
        Ok(self
            .commit(actor, |tx, env| {
                rules::create_shared_line(tx, env, g, input)
            })?
            .0)
    }
    pub(crate) fn update_shared_line(
        &self,
        actor: &str,
        g: &GroupId,
        n: &SharedNumber,
        input: SharedLineInput,
    ) -> Result<SharedLine, StoreError> {
        Ok(self
            .commit(actor, |tx, env| {
                rules::update_shared_line(tx, env, g, n, input)
            })?
            .0)
    }
    pub(crate) fn set_shared_line_members(
        &self,
        actor: &str,
        g: &GroupId,
        n: &SharedNumber,
        members: Vec<Member>,
    ) -> Result<SharedLine, StoreError> {
        Ok(self
            .commit(actor, |tx, env| rules::set_members(tx, env, g, n, members))?
            .0)
    }
    pub(crate) fn delete_shared_line(
        &self,
        actor: &str,
        g: &GroupId,
        n: &SharedNumber,
    ) -> Result<Change, StoreError> {
        Ok(self
            .commit(actor, |tx, _| {
                Ok((rules::delete_shared_line(tx, g, n)?, ()))
            })?
            .1)
    }

    pub(crate) fn create_key_profile(
        &self,
        actor: &str,
        g: &GroupId,
        input: KeyProfileInput,
    ) -> Result<KeyProfile, StoreError> {
        Ok(self
            .commit(actor, |tx, _| rules::create_key_profile(tx, g, input))?
            .0)
    }
    pub(crate) fn update_key_profile(
        &self,
        actor: &str,
        g: &GroupId,
        n: &ProfileName,
        input: KeyProfileInput,
    ) -> Result<KeyProfile, StoreError> {
        Ok(self
            .commit(actor, |tx, env| {
                rules::update_key_profile(tx, env, g, n, input)
            })?
            .0)
    }
    pub(crate) fn delete_key_profile(
        &self,
        actor: &str,
        g: &GroupId,
        n: &ProfileName,
    ) -> Result<Change, StoreError> {
        Ok(self
            .commit(actor, |tx, _| {
                Ok((rules::delete_key_profile(tx, g, n)?, ()))
            })?
            .1)
    }
    pub(crate) fn move_profile_key(
        &self,
        actor: &str,
        g: &GroupId,
        n: &ProfileName,
        mv: KeyMove,
    ) -> Result<KeyProfile, StoreError> {
        Ok(self
            .commit(actor, |tx, env| rules::move_profile_key(tx, env, g, n, mv))?
            .0)
    }
    pub(crate) fn move_device_key(
        &self,
        actor: &str,
        mac: &Mac,
        mv: KeyMove,
    ) -> Result<Change, StoreError> {
        Ok(self
            .commit(actor, |tx, env| {
                Ok((rules::move_device_key(tx, env, mac, mv)?, ()))
            })?
            .1)
    }

    /// Stores a (validated) template body as the live version; returns the version number.
    pub(crate) fn put_template(
        &self,
        actor: &str,
        model: &str,
        template: &str,
        body: String,
    ) -> Result<u32, StoreError> {
        Ok(self
            .commit(actor, |tx, _| {
                rules::put_template(tx, model, template, body, now(), actor)
            })?
            .0)
    }
    /// Makes `version` live (`None`: the built-in template).
    pub(crate) fn activate_template(
        &self,
        actor: &str,
        model: &str,
        template: &str,
        version: Option<u32>,
    ) -> Result<Change, StoreError> {
        Ok(self
            .commit(actor, |tx, _| {
                Ok((rules::activate_template(tx, model, template, version)?, ()))
            })?
            .1)
    }
    /// Every stored template override.
    pub fn template_overrides(&self) -> Vec<crate::domain::TemplateOverride> {
        self.read().templates.values().cloned().collect()
    }

    /// Creates a token; returns it and the secret to hand out once (`dp_<id>_<secret>`).
    pub fn create_token(
        &self,
        actor: &str,
        name: &str,
        group: Option<GroupId>,
    ) -> Result<(Token, String), StoreError> {
        let id = crate::secrets::hex_token::<4>();
        let secret = crate::secrets::hex_token::<24>();
        let t = Token {
            id: id.clone(),
            name: name.to_string(),
            group,
            secret_sha256: Secret::new(crate::secrets::sha256_hex(secret.as_bytes())),
            created_at: now(),
        };
        let stored = t.clone();
        self.commit(actor, |tx, _| Ok((rules::create_token(tx, stored)?, ())))?;
        Ok((t, format!("dp_{id}_{secret}")))
    }
    pub fn delete_token(&self, actor: &str, id: &str) -> Result<Change, StoreError> {
        Ok(self
            .commit(actor, |tx, _| Ok((rules::delete_token(tx, id)?, ())))?
            .1)
    }

    /// The token a bearer secret belongs to, if any (constant-time comparison of the hash).
    pub(crate) fn authenticate(&self, bearer: &str) -> Option<Token> {
        let rest = bearer.strip_prefix("dp_")?;
        let (id, secret) = rest.split_once('_')?;
        let state = self.read();
        let t = state.tokens.get(id)?;
        let presented = crate::secrets::sha256_hex(secret.as_bytes());
        crate::secrets::ct_eq(presented.as_bytes(), t.secret_sha256.expose().as_bytes())
            .then(|| t.clone())
    }
}

/// Firmware: image records, targets, pause and resume (the bytes are [`crate::firmware`]'s).
impl Store {
    pub(crate) fn put_firmware_image(
        &self,
        actor: &str,
        img: FirmwareImage,
    ) -> Result<(FirmwareImage, Change), StoreError> {
        self.commit(actor, |tx, env| rules::put_firmware_image(tx, env, img))
    }
    /// Returns the deleted image's digest.
    pub(crate) fn delete_firmware_image(
        &self,
        actor: &str,
        model: &str,
        version: &str,
    ) -> Result<String, StoreError> {
        Ok(self
            .commit(actor, |tx, _| {
                rules::delete_firmware_image(tx, model, version)
            })?
            .0)
    }
    pub(crate) fn set_firmware_target(
        &self,
        actor: &str,
        g: &GroupId,
        model: &str,
        input: FirmwareTargetInput,
    ) -> Result<(FirmwareTarget, Change), StoreError> {
        self.commit(actor, |tx, env| {
            rules::set_firmware_target(tx, env, g, model, input, now())
        })
    }
    pub(crate) fn delete_firmware_target(
        &self,
        actor: &str,
        g: &GroupId,
        model: &str,
    ) -> Result<Change, StoreError> {
        Ok(self
            .commit(actor, |tx, _| {
                Ok((rules::delete_firmware_target(tx, g, model)?, ()))
            })?
            .1)
    }
    pub(crate) fn pause_firmware_target(
        &self,
        actor: &str,
        g: &GroupId,
        model: &str,
        version: &str,
        pause: FirmwarePause,
    ) -> Result<FirmwareTarget, StoreError> {
        Ok(self
            .commit(actor, |tx, _| {
                rules::pause_firmware_target(tx, g, model, version, pause)
            })?
            .0)
    }
    pub(crate) fn resume_firmware_target(
        &self,
        actor: &str,
        g: &GroupId,
        model: &str,
    ) -> Result<FirmwareTarget, StoreError> {
        Ok(self
            .commit(actor, |tx, _| rules::resume_firmware_target(tx, g, model))?
            .0)
    }
}
