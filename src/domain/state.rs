//! The in-memory state and the transaction every rule runs in.
//!
//! [`State`] holds every entity, ordered by key (so lists paginate in a stable order). Rules
//! mutate it only through a [`Tx`], which remembers the first value of every record it touches:
//! on error the store calls [`Tx::rollback`], on success it persists [`Tx::writes`] — exactly the
//! records that changed — together with the change-log entry.
//!
//! Every map is a persistent B-tree ([`imbl`]) of shared records: cloning a [`State`] costs a
//! few reference counts, and a write after a clone copies only the nodes on its path. That is
//! what lets the store publish an immutable snapshot after every commit, so readers (phones,
//! previews, the dispatcher) never wait for a writer.

use std::collections::BTreeMap;
use std::ops::{Index, RangeBounds};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::entities::*;
use super::ids::*;

/// One stored record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Record {
    Group(Group),
    User(User),
    Device(Device),
    Sca(ScaEndpoint),
    SharedLine(SharedLine),
    Token(Token),
    Template(TemplateOverride),
    KeyProfile(KeyProfile),
    Firmware(FirmwareImage),
    FirmwareTarget(FirmwareTarget),
}

/// The key of a record; `Ord` groups records by type, then by their natural key.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub(crate) enum RecordKey {
    Group(GroupId),
    User(GroupId, Extension),
    Device(Mac),
    Sca(LinePort),
    SharedLine(GroupId, SharedNumber),
    Token(String),
    /// (model, template file)
    Template(String, String),
    KeyProfile(GroupId, ProfileName),
    /// (model, version)
    Firmware(String, String),
    /// (group, model)
    FirmwareTarget(GroupId, String),
}

impl RecordKey {
    /// The byte key the store files this record under. Parts are separated by `/`, which no
    /// identifier may contain.
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            RecordKey::Group(g) => format!("g/{g}"),
            RecordKey::User(g, e) => format!("u/{g}/{e}"),
            RecordKey::Device(m) => format!("d/{m}"),
            RecordKey::Sca(p) => format!("s/{p}"),
            RecordKey::SharedLine(g, n) => format!("l/{g}/{n}"),
            RecordKey::Token(t) => format!("t/{t}"),
            RecordKey::Template(m, f) => format!("T/{m}/{f}"),
            RecordKey::KeyProfile(g, n) => format!("k/{g}/{n}"),
            RecordKey::Firmware(m, v) => format!("f/{m}/{v}"),
            RecordKey::FirmwareTarget(g, m) => format!("F/{g}/{m}"),
        }
        .into_bytes()
    }
}

impl Record {
    /// The passwords this record holds, for the store to seal at rest.
    pub(crate) fn passwords_mut(&mut self) -> Vec<&mut Secret> {
        match self {
            Record::User(u) => vec![&mut u.sip.password],
            Record::Device(d) => vec![&mut d.prov_password],
            Record::SharedLine(l) => vec![&mut l.password],
            _ => vec![],
        }
    }

    fn passwords(&self) -> Vec<&Secret> {
        match self {
            Record::User(u) => vec![&u.sip.password],
            Record::Device(d) => vec![&d.prov_password],
            Record::SharedLine(l) => vec![&l.password],
            _ => vec![],
        }
    }

    pub(crate) fn key(&self) -> RecordKey {
        match self {
            Record::Group(g) => RecordKey::Group(g.id.clone()),
            Record::User(u) => RecordKey::User(u.group.clone(), u.extension.clone()),
            Record::Device(d) => RecordKey::Device(d.mac.clone()),
            Record::Sca(s) => RecordKey::Sca(s.line_port.clone()),
            Record::SharedLine(l) => RecordKey::SharedLine(l.group.clone(), l.number.clone()),
            Record::Token(t) => RecordKey::Token(t.id.clone()),
            Record::Template(t) => RecordKey::Template(t.model.clone(), t.template.clone()),
            Record::KeyProfile(p) => RecordKey::KeyProfile(p.group.clone(), p.name.clone()),
            Record::Firmware(f) => RecordKey::Firmware(f.model.clone(), f.version.clone()),
            Record::FirmwareTarget(t) => {
                RecordKey::FirmwareTarget(t.group.clone(), t.model.clone())
            }
        }
    }
}

/// A read-only view of one entity map: lookups and ordered iteration, no mutation. Only
/// [`State::put`] and [`State::remove`] change a table, so the indexes cannot fall out of step.
#[derive(Clone, Debug)]
pub struct Table<K: Ord + Clone, V>(imbl::OrdMap<K, Arc<V>>);

impl<K: Ord + Clone, V> Default for Table<K, V> {
    fn default() -> Self {
        Table(imbl::OrdMap::new())
    }
}

impl<K: Ord + Clone, V> Table<K, V> {
    pub(crate) fn get<Q: Ord + ?Sized>(&self, k: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
    {
        self.0.get(k).map(|v| &**v)
    }
    pub(crate) fn contains_key<Q: Ord + ?Sized>(&self, k: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
    {
        self.0.contains_key(k)
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + '_ {
        self.0.values().map(|v| &**v)
    }
    /// Entries whose key is in `range`, in key order.
    pub(crate) fn range<R: RangeBounds<K>>(
        &self,
        range: R,
    ) -> impl DoubleEndedIterator<Item = (&K, &V)> + '_ {
        self.0.range(range).map(|(k, v)| (k, &**v))
    }
    fn insert(&mut self, k: K, v: V) -> Option<V>
    where
        V: Clone,
    {
        self.0.insert(k, Arc::new(v)).map(Arc::unwrap_or_clone)
    }
    fn remove(&mut self, k: &K) -> Option<V>
    where
        V: Clone,
    {
        self.0.remove(k).map(Arc::unwrap_or_clone)
    }
}

impl<K: Ord + Clone, V> Index<&K> for Table<K, V> {
    type Output = V;
    /// Panics when the key is absent, like `BTreeMap`'s index: only for keys just looked up.
    fn index(&self, k: &K) -> &V {
        self.get(k).expect("key present in table")
    }
}

impl<K: Ord + Clone, V> FromIterator<(K, V)> for Table<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Table(iter.into_iter().map(|(k, v)| (k, Arc::new(v))).collect())
    }
}

/// Every entity, in memory. Reads go straight to these maps; writes go through [`State::put`]
/// and [`State::remove`] only, which keep the indexes below in step.
#[derive(Clone, Debug, Default)]
pub struct State {
    pub(crate) groups: Table<GroupId, Group>,
    pub users: Table<(GroupId, Extension), User>,
    pub devices: Table<Mac, Device>,
    pub scas: Table<LinePort, ScaEndpoint>,
    pub(crate) shared_lines: Table<(GroupId, SharedNumber), SharedLine>,
    pub tokens: Table<String, Token>,
    pub(crate) templates: Table<(String, String), TemplateOverride>,
    pub(crate) key_profiles: Table<(GroupId, ProfileName), KeyProfile>,
    /// Firmware images by (model, version).
    pub(crate) firmware: Table<(String, String), FirmwareImage>,
    /// Firmware targets by (group, model).
    pub(crate) firmware_targets: Table<(GroupId, String), FirmwareTarget>,
    idx: Indexes,
}

type UserKey = (GroupId, Extension);

/// Secondary indexes, so that no rule or render scans every user, device or endpoint.
///
/// They hold (owner, member) pairs in one flat set rather than a set per owner: most devices
/// and users have one SCA endpoint, and a one-element persistent set costs a whole B-tree leaf
/// (about 0.4 KiB) where a pair costs its two keys.
#[derive(Clone, Debug, Default, PartialEq)]
struct Indexes {
    scas_by_device: imbl::OrdSet<(Mac, LinePort)>,
    scas_by_user: imbl::OrdSet<(UserKey, LinePort)>,
    devices_by_group: imbl::OrdMap<GroupId, imbl::OrdSet<Mac>>,
    /// Users whose SIP username is explicit (`sip.username`). Every other user's is its phone
    /// number or `<group>_<extension>`, found through `user_by_phone` or the users table
    /// ([`State::user_with_username`]), so the common case costs no entry here.
    user_by_explicit_username: imbl::HashMap<String, UserKey>,
    user_by_phone: imbl::HashMap<PhoneNumber, UserKey>,
}

impl Indexes {
    fn add(&mut self, r: &Record) {
        match r {
            Record::User(u) => {
                let k = (u.group.clone(), u.extension.clone());
                if let Some(name) = u.sip.username() {
                    self.user_by_explicit_username
                        .insert(name.to_string(), k.clone());
                }
                if let Some(p) = &u.phone_number {
                    self.user_by_phone.insert(p.clone(), k);
                }
            }
            Record::Device(d) => {
                self.devices_by_group
                    .entry(d.group.clone())
                    .or_default()
                    .insert(d.mac.clone());
            }
            Record::Sca(x) => {
                self.scas_by_device
                    .insert((x.device.clone(), x.line_port.clone()));
                self.scas_by_user
                    .insert(((x.group.clone(), x.extension.clone()), x.line_port.clone()));
            }
            _ => {}
        }
    }

    fn drop(&mut self, r: &Record) {
        match r {
            Record::User(u) => {
                if let Some(name) = u.sip.username() {
                    self.user_by_explicit_username.remove(name);
                }
                if let Some(p) = &u.phone_number {
                    self.user_by_phone.remove(p);
                }
            }
            Record::Device(d) => {
                if let Some(set) = self.devices_by_group.get_mut(&d.group) {
                    set.remove(&d.mac);
                    if set.is_empty() {
                        self.devices_by_group.remove(&d.group);
                    }
                }
            }
            Record::Sca(x) => {
                self.scas_by_device
                    .remove(&(x.device.clone(), x.line_port.clone()));
                self.scas_by_user
                    .remove(&((x.group.clone(), x.extension.clone()), x.line_port.clone()));
            }
            _ => {}
        }
    }
}

/// Records a [`Loader`] holds back before adding them.
const PACK_WINDOW: usize = 4096;

/// Builds a state from the records of a load as they arrive, in key order. An imbl B-tree leaf
/// is a fixed array of 16 entries that splits in half when full, so inserting in key order
/// leaves every leaf half full: the users' and devices' maps would take twice the memory of
/// their entries. The loader instead adds each window of [`PACK_WINDOW`] records every other
/// one first, then the rest: the first half leaves each leaf 8 entries spanning 16 keys, the
/// second fills them without splitting, so leaves end nearly full. Only the memory a map takes
/// depends on the order; its contents never do.
#[derive(Default)]
pub(crate) struct Loader {
    state: State,
    pending: Vec<Record>,
    odd: Vec<Record>,
}

impl Loader {
    /// Adds the next record of the load (its key follows every key added before).
    pub(crate) fn add(&mut self, r: Record) {
        if self.pending.len() == PACK_WINDOW {
            self.flush();
        }
        self.pending.push(r);
    }

    fn flush(&mut self) {
        for (i, r) in self.pending.drain(..).enumerate() {
            if i % 2 == 0 {
                self.state.add_loaded(r);
            } else {
                self.odd.push(r);
            }
        }
        for r in self.odd.drain(..) {
            self.state.add_loaded(r);
        }
    }

    /// The state of every record added.
    pub(crate) fn finish(mut self) -> State {
        self.flush();
        self.state
    }
}

impl State {
    /// Builds the state from stored records, in key order (see [`Loader`]).
    pub fn from_records(records: impl IntoIterator<Item = Record>) -> State {
        let mut l = Loader::default();
        for r in records {
            l.add(r);
        }
        l.finish()
    }

    /// Adds a loaded record, whose key no record in the state has yet (a load's records are
    /// distinct), so nothing is looked up to be replaced.
    pub(crate) fn add_loaded(&mut self, r: Record) {
        self.idx.add(&r);
        self.put_raw(r);
    }

    /// Inserts or replaces a record; returns the previous one.
    pub(crate) fn put(&mut self, r: Record) -> Option<Record> {
        let prev = self.remove(&r.key());
        self.idx.add(&r);
        self.put_raw(r);
        prev
    }

    /// Removes a record; returns it.
    pub(crate) fn remove(&mut self, k: &RecordKey) -> Option<Record> {
        let prev = self.remove_raw(k);
        if let Some(p) = &prev {
            self.idx.drop(p);
        }
        prev
    }

    fn put_raw(&mut self, r: Record) -> Option<Record> {
        match r {
            Record::Group(g) => self.groups.insert(g.id.clone(), g).map(Record::Group),
            Record::User(u) => self
                .users
                .insert((u.group.clone(), u.extension.clone()), u)
                .map(Record::User),
            Record::Device(d) => self.devices.insert(d.mac.clone(), d).map(Record::Device),
            Record::Sca(s) => self.scas.insert(s.line_port.clone(), s).map(Record::Sca),
            Record::SharedLine(l) => self
                .shared_lines
                .insert((l.group.clone(), l.number.clone()), l)
                .map(Record::SharedLine),
            Record::Token(t) => self.tokens.insert(t.id.clone(), t).map(Record::Token),
            Record::Template(t) => self
                .templates
                .insert((t.model.clone(), t.template.clone()), t)
                .map(Record::Template),
            Record::KeyProfile(p) => self
                .key_profiles
                .insert((p.group.clone(), p.name.clone()), p)
                .map(Record::KeyProfile),
            Record::Firmware(f) => self
                .firmware
                .insert((f.model.clone(), f.version.clone()), f)
                .map(Record::Firmware),
            Record::FirmwareTarget(t) => self
                .firmware_targets
                .insert((t.group.clone(), t.model.clone()), t)
                .map(Record::FirmwareTarget),
        }
    }

    fn remove_raw(&mut self, k: &RecordKey) -> Option<Record> {
        match k {
            RecordKey::Group(g) => self.groups.remove(g).map(Record::Group),
            RecordKey::User(g, e) => self.users.remove(&(g.clone(), e.clone())).map(Record::User),
            RecordKey::Device(m) => self.devices.remove(m).map(Record::Device),
            RecordKey::Sca(p) => self.scas.remove(p).map(Record::Sca),
            RecordKey::SharedLine(g, n) => self
                .shared_lines
                .remove(&(g.clone(), n.clone()))
                .map(Record::SharedLine),
            RecordKey::Token(t) => self.tokens.remove(t).map(Record::Token),
            RecordKey::Template(m, f) => self
                .templates
                .remove(&(m.clone(), f.clone()))
                .map(Record::Template),
            RecordKey::KeyProfile(g, n) => self
                .key_profiles
                .remove(&(g.clone(), n.clone()))
                .map(Record::KeyProfile),
            RecordKey::Firmware(m, v) => self
                .firmware
                .remove(&(m.clone(), v.clone()))
                .map(Record::Firmware),
            RecordKey::FirmwareTarget(g, m) => self
                .firmware_targets
                .remove(&(g.clone(), m.clone()))
                .map(Record::FirmwareTarget),
        }
    }

    pub(crate) fn get(&self, k: &RecordKey) -> Option<Record> {
        match k {
            RecordKey::Group(g) => self.groups.get(g).cloned().map(Record::Group),
            RecordKey::User(g, e) => self
                .users
                .get(&(g.clone(), e.clone()))
                .cloned()
                .map(Record::User),
            RecordKey::Device(m) => self.devices.get(m).cloned().map(Record::Device),
            RecordKey::Sca(p) => self.scas.get(p).cloned().map(Record::Sca),
            RecordKey::SharedLine(g, n) => self
                .shared_lines
                .get(&(g.clone(), n.clone()))
                .cloned()
                .map(Record::SharedLine),
            RecordKey::Token(t) => self.tokens.get(t).cloned().map(Record::Token),
            RecordKey::Template(m, f) => self
                .templates
                .get(&(m.clone(), f.clone()))
                .cloned()
                .map(Record::Template),
            RecordKey::KeyProfile(g, n) => self
                .key_profiles
                .get(&(g.clone(), n.clone()))
                .cloned()
                .map(Record::KeyProfile),
            RecordKey::Firmware(m, v) => self
                .firmware
                .get(&(m.clone(), v.clone()))
                .cloned()
                .map(Record::Firmware),
            RecordKey::FirmwareTarget(g, m) => self
                .firmware_targets
                .get(&(g.clone(), m.clone()))
                .cloned()
                .map(Record::FirmwareTarget),
        }
    }

    /// Panics if an index disagrees with one rebuilt from the records (for tests).
    #[cfg(test)]
    pub(crate) fn check_indexes(&self) {
        let mut fresh = Indexes::default();
        let records = self
            .users
            .values()
            .cloned()
            .map(Record::User)
            .chain(self.devices.values().cloned().map(Record::Device))
            .chain(self.scas.values().cloned().map(Record::Sca));
        for r in records {
            fresh.add(&r);
        }
        assert_eq!(self.idx, fresh, "indexes out of step with the records");
    }

    // ---- queries the rules and the API share ----

    pub(crate) fn user(&self, g: &GroupId, e: &Extension) -> Option<&User> {
        self.users.get(&(g.clone(), e.clone()))
    }

    pub(crate) fn users_of<'a>(&'a self, g: &'a GroupId) -> impl Iterator<Item = &'a User> + 'a {
        self.users
            .range((g.clone(), Extension::parse("00").expect("valid"))..)
            .take_while(move |((gg, _), _)| gg == g)
            .map(|(_, u)| u)
    }

    pub(crate) fn shared_lines_of<'a>(
        &'a self,
        g: &'a GroupId,
    ) -> impl Iterator<Item = &'a SharedLine> + 'a {
        self.shared_lines
            .range((g.clone(), SharedNumber::parse("00").expect("valid"))..)
            .take_while(move |((gg, _), _)| gg == g)
            .map(|(_, l)| l)
    }

    pub(crate) fn devices_of<'a>(
        &'a self,
        g: &'a GroupId,
    ) -> impl Iterator<Item = &'a Device> + 'a {
        self.idx
            .devices_by_group
            .get(g)
            .into_iter()
            .flatten()
            .filter_map(|m| self.devices.get(m))
    }

    /// Devices whose primary line is this user's (as owner without a guest, or as guest).
    pub(crate) fn devices_with_context_user<'a>(
        &'a self,
        g: &'a GroupId,
        e: &'a Extension,
    ) -> impl Iterator<Item = &'a Device> + 'a {
        self.devices_of(g)
            .filter(move |d| d.context_user() == Some(e))
    }

    /// Devices owned by this user (whether or not a guest is logged in).
    pub(crate) fn devices_owned_by<'a>(
        &'a self,
        g: &'a GroupId,
        e: &'a Extension,
    ) -> impl Iterator<Item = &'a Device> + 'a {
        self.devices_of(g)
            .filter(move |d| d.owner.as_ref() == Some(e))
    }

    /// SCA endpoints of one user's line.
    pub(crate) fn scas_of_user<'a>(
        &'a self,
        g: &'a GroupId,
        e: &'a Extension,
    ) -> impl Iterator<Item = &'a ScaEndpoint> + 'a {
        let user = (g.clone(), e.clone());
        self.idx
            .scas_by_user
            .range((user.clone(), LinePort::lowest())..)
            .take_while(move |(u, _)| *u == user)
            .filter_map(|(_, p)| self.scas.get(p))
    }

    /// SCA endpoints placed on one device.
    pub(crate) fn scas_on<'a>(
        &'a self,
        mac: &'a Mac,
    ) -> impl Iterator<Item = &'a ScaEndpoint> + 'a {
        self.idx
            .scas_by_device
            .range((mac.clone(), LinePort::lowest())..)
            .take_while(move |(m, _)| m == mac)
            .filter_map(|(_, p)| self.scas.get(p))
    }

    /// The user with this phone number, anywhere on the platform.
    pub(crate) fn user_with_phone(&self, p: &PhoneNumber) -> Option<&User> {
        self.idx
            .user_by_phone
            .get(p)
            .and_then(|k| self.users.get(k))
    }

    /// Shared lines a user is a member of, with the membership.
    pub(crate) fn memberships_of<'a>(
        &'a self,
        g: &'a GroupId,
        e: &'a Extension,
    ) -> impl Iterator<Item = (&'a SharedLine, &'a Member)> + 'a {
        self.shared_lines_of(g)
            .filter_map(move |l| l.members.iter().find(|m| &m.extension == e).map(|m| (l, m)))
    }

    /// A key profile of a group.
    pub(crate) fn key_profile(&self, g: &GroupId, n: &ProfileName) -> Option<&KeyProfile> {
        self.key_profiles.get(&(g.clone(), n.clone()))
    }

    /// The key profiles of a group, in name order.
    pub(crate) fn key_profiles_of<'a>(
        &'a self,
        g: &'a GroupId,
    ) -> impl Iterator<Item = &'a KeyProfile> + 'a {
        self.key_profiles
            .range((g.clone(), ProfileName::parse("0").expect("valid"))..)
            .take_while(move |((gg, _), _)| gg == g)
            .map(|(_, p)| p)
    }

    /// The firmware images of a model, by version.
    pub(crate) fn firmware_of<'a>(
        &'a self,
        model: &'a str,
    ) -> impl Iterator<Item = &'a FirmwareImage> + 'a {
        self.firmware
            .range((model.to_string(), String::new())..)
            .take_while(move |((m, _), _)| m == model)
            .map(|(_, f)| f)
    }

    /// The firmware targets of a group, by model.
    pub(crate) fn firmware_targets_of<'a>(
        &'a self,
        g: &'a GroupId,
    ) -> impl Iterator<Item = &'a FirmwareTarget> + 'a {
        self.firmware_targets
            .range((g.clone(), String::new())..)
            .take_while(move |((gg, _), _)| gg == g)
            .map(|(_, t)| t)
    }

    /// The firmware target of a device (its group's for its model), if any.
    pub(crate) fn firmware_target_of(&self, d: &Device) -> Option<&FirmwareTarget> {
        self.firmware_targets
            .get(&(d.group.clone(), d.model.to_string()))
    }

    /// Devices of a group that use a key profile.
    pub(crate) fn devices_with_profile<'a>(
        &'a self,
        g: &'a GroupId,
        n: &'a ProfileName,
    ) -> impl Iterator<Item = &'a Device> + 'a {
        self.devices_of(g)
            .filter(move |d| d.key_profile.as_deref() == Some(n))
    }

    /// The user whose primary line port (SIP username) this is, anywhere on the platform: an
    /// explicit `sip.username`, else the user whose phone number or `<group>_<extension>` it
    /// is and whose username that is (a user with an explicit one answers only to it).
    pub(crate) fn user_with_username(&self, username: &str) -> Option<&User> {
        if let Some(k) = self.idx.user_by_explicit_username.get(username) {
            return self.users.get(k);
        }
        let derived = match PhoneNumber::parse(username) {
            Ok(p) => self.user_with_phone(&p),
            Err(_) => {
                let (g, e) = username.rsplit_once('_')?;
                self.user(&GroupId::parse(g).ok()?, &Extension::parse(e).ok()?)
            }
        };
        derived.filter(|u| u.sip.username().is_none() && u.sip_username() == username)
    }

    /// A device by name within a group.
    pub(crate) fn device_by_name<'a>(&'a self, g: &'a GroupId, name: &str) -> Option<&'a Device> {
        self.devices_of(g).find(|d| d.name == name)
    }

    /// Whether a line port is held (by a user's primary line, an SCA endpoint or a shared
    /// line), anywhere on the platform. Only whether: rule messages must not name a holder that
    /// may be in another group.
    pub(crate) fn line_port_taken(&self, port: &str) -> bool {
        if LinePort::parse(port).is_ok_and(|lp| self.scas.contains_key(&lp)) {
            return true;
        }
        if self.user_with_username(port).is_some() {
            return true;
        }
        // A shared line's port is <group>_<number>; the number has no '_'.
        let Some((g, n)) = port.rsplit_once('_') else {
            return false;
        };
        match (GroupId::parse(g), SharedNumber::parse(n)) {
            (Ok(g), Ok(n)) => self.shared_lines.contains_key(&(g, n)),
            _ => false,
        }
    }
}

/// A transaction over [`State`]: mutations apply at once and are remembered for rollback.
pub(crate) struct Tx<'a> {
    state: &'a mut State,
    /// First-seen value of every touched key (`None` = did not exist).
    undo: BTreeMap<RecordKey, Option<Record>>,
}

impl<'a> Tx<'a> {
    pub(crate) fn new(state: &'a mut State) -> Self {
        Tx {
            state,
            undo: BTreeMap::new(),
        }
    }

    /// The state as the transaction sees it (its own writes included).
    pub(crate) fn state(&self) -> &State {
        self.state
    }

    pub(crate) fn put(&mut self, r: Record) {
        let k = r.key();
        let prev = self.state.put(r);
        self.undo.entry(k).or_insert(prev);
    }

    pub(crate) fn delete(&mut self, k: RecordKey) {
        let prev = self.state.remove(&k);
        self.undo.entry(k).or_insert(prev);
    }

    /// Every touched key with its value now (`None` = deleted), skipping no-op round trips.
    pub(crate) fn writes(&self) -> Vec<(RecordKey, Option<Record>)> {
        self.undo
            .iter()
            .filter_map(|(k, before)| {
                let now = self.state.get(k);
                (now != *before).then(|| (k.clone(), now))
            })
            .collect()
    }

    /// Whether the transaction replaced or deleted a password that was stored before (a
    /// rotation, a new password, a deleted device): the store then makes the old one
    /// unrecoverable from its files.
    pub(crate) fn dropped_a_password(&self) -> bool {
        self.undo.iter().any(|(k, before)| {
            let Some(before) = before else { return false };
            let now = self.state.get(k);
            let now = now.as_ref().map(Record::passwords).unwrap_or_default();
            before.passwords().iter().any(|p| !now.contains(p))
        })
    }

    /// Runs `f` as a nested step of this transaction: its writes stay when it succeeds and are
    /// undone when it fails, the rest of the transaction untouched (an import checks every row
    /// and reports each bad one, in one transaction).
    pub(crate) fn step<R, E>(&mut self, f: impl FnOnce(&mut Tx) -> Result<R, E>) -> Result<R, E> {
        let mut inner = Tx::new(self.state);
        match f(&mut inner) {
            Ok(v) => {
                let Tx { undo, .. } = inner;
                for (k, before) in undo {
                    self.undo.entry(k).or_insert(before);
                }
                Ok(v)
            }
            Err(e) => {
                inner.rollback();
                Err(e)
            }
        }
    }

    /// Restores every touched record to its first-seen value.
    pub(crate) fn rollback(self) {
        for (k, before) in self.undo {
            match before {
                Some(r) => {
                    self.state.put(r);
                }
                None => {
                    self.state.remove(&k);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(g: &str, e: &str, phone: Option<&str>, username: Option<&str>) -> Record {
        serde_json::from_value(serde_json::json!({"type": "user", "value": {
            "group": g, "extension": e, "phone_number": phone, "first_name": "A",
            "last_name": "B", "kind": "standard",
            "sip": {"username": username, "password": "pw"}, "features": {}}}))
        .unwrap()
    }

    fn device(m: &str, g: &str) -> Record {
        serde_json::from_value(serde_json::json!({"type": "device", "value": {
            "mac": m, "group": g, "name": m, "model": "yealink-t54w", "keys": [],
            "settings": {}, "prov_password": "pw", "revision": 1}}))
        .unwrap()
    }

    fn sca(port: &str, g: &str, e: &str, m: &str) -> Record {
        serde_json::from_value(serde_json::json!({"type": "sca", "value": {
            "line_port": port, "group": g, "extension": e, "device": m, "key": 2,
            "active": true, "allow_origination": true, "allow_termination": true}}))
        .unwrap()
    }

    fn ports<'a>(it: impl Iterator<Item = &'a ScaEndpoint>) -> Vec<&'a str> {
        it.map(|x| x.line_port.as_str()).collect()
    }

    #[test]
    fn a_load_of_several_windows_holds_every_record_with_its_indexes() {
        let n = PACK_WINDOW * 2 + 3;
        let mut records: Vec<Record> = (0..n)
            .map(|i| device(&format!("0004f2{i:06x}"), "g1"))
            .collect();
        records.push(user("g1", "10", Some("6035551212"), None));
        records.push(sca("6035551212_sca1", "g1", "10", "0004f2000001"));
        records.sort_by_key(Record::key);
        let mut put = State::default();
        for r in records.clone() {
            put.put(r);
        }
        let loaded = State::from_records(records);
        assert_eq!(loaded.devices.len(), n);
        assert!(loaded.devices.values().eq(put.devices.values()));
        assert!(loaded.users.values().eq(put.users.values()));
        assert!(loaded.scas.values().eq(put.scas.values()));
        assert_eq!(loaded.idx, put.idx);
        loaded.check_indexes();
    }

    #[test]
    fn a_username_finds_its_user_by_phone_number_group_extension_or_explicit_name() {
        let s = State::from_records([
            user("g1", "10", Some("6035551212"), None),
            user("g1", "11", None, None),
            user("g1", "12", Some("6035551213"), Some("ada")),
        ]);
        let ext_of = |name: &str| s.user_with_username(name).map(|u| u.extension.as_str());
        assert_eq!(ext_of("6035551212"), Some("10"));
        assert_eq!(ext_of("g1_11"), Some("11"));
        assert_eq!(ext_of("ada"), Some("12"));
        // A user with an explicit username answers to nothing else.
        assert_eq!(ext_of("6035551213"), None);
        assert_eq!(ext_of("g1_12"), None);
        // Nor does a user with a phone number answer to <group>_<extension>.
        assert_eq!(ext_of("g1_10"), None);
        assert_eq!(ext_of("g1_13"), None);
        assert!(s.line_port_taken("g1_11"));
        assert!(!s.line_port_taken("g1_10"));
    }

    #[test]
    fn a_username_follows_a_user_through_updates_and_deletion() {
        let mut s = State::from_records([user("g1", "10", None, Some("ada"))]);
        s.put(user("g1", "10", None, None));
        assert!(s.user_with_username("ada").is_none());
        assert!(s.user_with_username("g1_10").is_some());
        s.put(user("g1", "10", None, Some("bob")));
        assert!(s.user_with_username("bob").is_some());
        s.remove(&RecordKey::User(
            GroupId::parse("g1").unwrap(),
            Extension::parse("10").unwrap(),
        ));
        assert!(s.user_with_username("bob").is_none());
        s.check_indexes();
    }

    #[test]
    fn endpoints_of_a_device_or_user_are_theirs_only() {
        let (m1, m2) = ("0004f2000001", "0004f2000002");
        let mut s = State::from_records([
            device(m1, "g1"),
            device(m2, "g1"),
            sca("g1_10_sca1", "g1", "10", m1),
            sca("g1_10_sca2", "g1", "10", m2),
            sca("g1_11_sca1", "g1", "11", m1),
            sca("g1_100_sca1", "g1", "100", m2),
        ]);
        let (g, e10) = (
            GroupId::parse("g1").unwrap(),
            Extension::parse("10").unwrap(),
        );
        let (mac1, mac2) = (Mac::parse(m1).unwrap(), Mac::parse(m2).unwrap());
        assert_eq!(ports(s.scas_on(&mac1)), ["g1_10_sca1", "g1_11_sca1"]);
        assert_eq!(ports(s.scas_on(&mac2)), ["g1_100_sca1", "g1_10_sca2"]);
        assert_eq!(
            ports(s.scas_of_user(&g, &e10)),
            ["g1_10_sca1", "g1_10_sca2"]
        );
        s.remove(&RecordKey::Sca(LinePort::parse("g1_10_sca1").unwrap()));
        assert_eq!(ports(s.scas_on(&mac1)), ["g1_11_sca1"]);
        assert_eq!(ports(s.scas_of_user(&g, &e10)), ["g1_10_sca2"]);
        s.check_indexes();
    }
}
