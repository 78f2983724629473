//! The known state: devices, users, the access model and the control view as last recorded, and
//! the source's health. Only [`Store::commit_pass`] writes it; these read it.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::Connection;

use super::Result;
use crate::model::access::Access;
use crate::model::state::{Known, KnownDevice, KnownUser};
use crate::model::{Ascending, Health, StableNodeId, UserId};
use crate::store::meta::{get_meta, load_health};
use crate::store::Store;
use crate::store::{parse_rfc3339, sqlite_err, DeviceRow, StoreError};

/// The last handshake recorded per device ([`Store::last_handshakes`]).
pub enum LastHandshakes<'a> {
    /// From the known state already in memory.
    Known(&'a Known),
    Loaded(BTreeMap<StableNodeId, DateTime<Utc>>),
}

impl LastHandshakes<'_> {
    /// The last handshake of each ID asked, the IDs in ascending order (a walk over a snapshot's
    /// map): one merge walk instead of a tree search per device.
    pub fn ascending(&self) -> impl FnMut(&StableNodeId) -> Option<DateTime<Utc>> + '_ {
        enum Walk<'a> {
            Known(Ascending<'a, StableNodeId, KnownDevice>),
            Loaded(Ascending<'a, StableNodeId, DateTime<Utc>>),
        }
        let mut walk = match self {
            LastHandshakes::Known(k) => Walk::Known(Ascending::new(&k.devices)),
            LastHandshakes::Loaded(m) => Walk::Loaded(Ascending::new(m)),
        };
        move |id| match &mut walk {
            Walk::Known(k) => k.get(id)?.last_handshake,
            Walk::Loaded(m) => m.get(id).copied(),
        }
    }
}

impl Store {
    /// The last handshake recorded per device, or `None` before the baseline: what the edge
    /// needs to decide whom to `whois`. Read from the preloaded state when it is current, else
    /// only that column is loaded, not every device record.
    pub fn last_handshakes(&self) -> Result<Option<LastHandshakes<'_>>> {
        if let Some(k) = self.current_cache() {
            return Ok(k.baseline_done.then_some(LastHandshakes::Known(k)));
        }
        let e = self.err();
        if get_meta(&self.conn, "baseline_at").map_err(&e)?.is_none() {
            return Ok(None);
        }
        let mut stmt = self
            .conn
            .prepare("SELECT id, last_handshake FROM devices WHERE last_handshake IS NOT NULL")
            .map_err(&e)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(&e)?
            .map(|r| r.map(|(id, t)| (StableNodeId(id), parse_rfc3339(&t))))
            .collect::<rusqlite::Result<_>>()
            .map_err(&e)?;
        Ok(Some(LastHandshakes::Loaded(rows)))
    }

    pub fn known(&self) -> Result<Known> {
        load_known(&self.conn, &self.path)
    }

    /// The access model recorded by the last pass that could read one.
    pub fn access(&self) -> Result<Option<Access>> {
        load_access(&self.conn, &self.path)
    }

    pub fn health(&self) -> Result<Health> {
        load_health(&self.conn).map_err(self.err())
    }

    pub fn devices(&self) -> Result<Vec<DeviceRow>> {
        let mut out = Vec::new();
        device_rows(&self.conn, &self.path, |r| out.push(r))?;
        Ok(out)
    }
}

/// Every device row, as the core and `devices` see it, handed to `each` as it is read: `check`
/// keeps each in its map at once, with no list of all of them beside the map.
pub(super) fn device_rows(
    conn: &Connection,
    path: &Path,
    mut each: impl FnMut(DeviceRow),
) -> Result<()> {
    let e = sqlite_err(path);
    let baseline_at = get_meta(conn, "baseline_at")
        .map_err(&e)?
        .map(|s| parse_rfc3339(&s));
    let last_pass = get_meta(conn, "last_pass")
        .map_err(&e)?
        .map(|s| parse_rfc3339(&s));
    let mut stmt = conn
        .prepare("SELECT id, data, removed, expiring_alerted, first_seen, last_seen, last_handshake FROM devices")
        .map_err(&e)?;
    let mut rows = stmt.query([]).map_err(&e)?;
    while let Some(r) = rows.next().map_err(&e)? {
        // Read in place (no copy of each row's text): `check` reads every row.
        let text = |i: usize| -> Result<Option<&str>> {
            match r.get_ref(i).map_err(&e)? {
                rusqlite::types::ValueRef::Null => Ok(None),
                v => v.as_str().map(Some).map_err(|err| e(err.into())),
            }
        };
        let time = |i: usize| -> Result<Option<DateTime<Utc>>> { Ok(text(i)?.map(parse_rfc3339)) };
        let first_seen = time(4)?.unwrap_or_default();
        let device = serde_json::from_str(text(1)?.unwrap_or_default()).map_err(|err| {
            StoreError::Corrupt {
                path: path.to_owned(),
                what: format!("device {}", text(0).ok().flatten().unwrap_or("?")),
                detail: err.to_string(),
            }
        })?;
        let removed: bool = r.get(2).map_err(&e)?;
        let stored_last = time(5)?.unwrap_or_default();
        each(DeviceRow {
            last_seen: match last_pass {
                Some(p) if !removed && p > stored_last => p,
                _ => stored_last,
            },
            known: KnownDevice {
                device,
                removed,
                expiring_alerted: time(3)?,
                last_handshake: time(6)?,
                after_baseline: baseline_at.is_some_and(|b| first_seen > b),
            },
            first_seen,
        });
    }
    Ok(())
}

pub(super) fn load_access(conn: &Connection, path: &Path) -> Result<Option<Access>> {
    let Some(text) = get_meta(conn, "access").map_err(sqlite_err(path))? else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|err| StoreError::Corrupt {
            path: path.to_owned(),
            what: "access model".into(),
            detail: err.to_string(),
        })
}

pub(super) fn load_known(conn: &Connection, path: &Path) -> Result<Known> {
    let e = sqlite_err(path);
    let corrupt = |what: String, err: serde_json::Error| StoreError::Corrupt {
        path: path.to_owned(),
        what,
        detail: err.to_string(),
    };
    let baseline_done = get_meta(conn, "baseline_at").map_err(&e)?.is_some();
    let mut devices = BTreeMap::new();
    device_rows(conn, path, |r| {
        devices.insert(r.known.device.id.clone(), r.known);
    })?;
    let mut users = BTreeMap::new();
    let mut stmt = conn
        .prepare("SELECT id, data, removed FROM users")
        .map_err(&e)?;
    let mut rows = stmt.query([]).map_err(&e)?;
    while let Some(r) = rows.next().map_err(&e)? {
        let id: i64 = r.get(0).map_err(&e)?;
        let data: String = r.get(1).map_err(&e)?;
        let user = serde_json::from_str(&data).map_err(|err| corrupt(format!("user {id}"), err))?;
        users.insert(
            UserId(id),
            KnownUser {
                user,
                removed: r.get(2).map_err(&e)?,
            },
        );
    }
    let access = load_access(conn, path)?;
    let control = match get_meta(conn, "control").map_err(&e)? {
        Some(text) => {
            Some(serde_json::from_str(&text).map_err(|err| corrupt("control view".into(), err))?)
        }
        None => None,
    };
    let presence = match get_meta(conn, "presence").map_err(&e)? {
        Some(text) => {
            Some(serde_json::from_str(&text).map_err(|err| corrupt("presence".into(), err))?)
        }
        None => None,
    };
    Ok(Known {
        baseline_done,
        devices,
        users,
        access,
        control,
        presence,
        tailnet_id: get_meta(conn, "tailnet_id").map_err(&e)?,
    })
}
