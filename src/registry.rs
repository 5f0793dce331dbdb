//! In-memory caches of the small, hot tables: who holds which token, and which subject each
//! device is assigned to. Ingest consults both for every ping, so they must not cost a
//! database round trip. The store stays the source of truth: the caches are filled from it
//! at start and updated by the same code path that writes it.
//!
//! Locks are `std::sync::RwLock`s held only for a lookup or an insert, never across `.await`.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::model::Role;
use crate::store::{DeviceRow, UserRow};
use crate::token::TokenHash;

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: i64,
    pub name: String,
    pub role: Role,
    /// For a device token: the one device it may post for. `None` for a gateway.
    pub device_pk: Option<i64>,
}

/// A registered device as ingest needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceEntry {
    pub pk: i64,
    pub subject_pk: Option<i64>,
}

#[derive(Debug, Default)]
pub struct Registry {
    /// Budget of store lookups for tokens not in the cache (see `api::auth`).
    pub throttle: crate::api::auth::LookupThrottle,
    principals: RwLock<HashMap<TokenHash, Principal>>,
    devices: RwLock<HashMap<String, DeviceEntry>>,
}

fn principal(u: &UserRow) -> Option<(TokenHash, Principal)> {
    let hash: TokenHash = u.token_hash.as_slice().try_into().ok()?;
    Some((
        hash,
        Principal {
            user_id: u.id,
            name: u.name.clone(),
            role: Role::parse(&u.role)?,
            device_pk: u.device_pk,
        },
    ))
}

impl Registry {
    pub fn load(users: &[UserRow], devices: &[DeviceRow]) -> Self {
        let r = Registry::default();
        for u in users {
            r.add_user(u);
        }
        for d in devices {
            r.put_device(&d.id, d.pk, d.subject_pk);
        }
        r
    }

    pub fn add_user(&self, u: &UserRow) {
        if let Some((h, p)) = principal(u) {
            self.principals
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(h, p);
        }
    }

    /// The principal holding a token with this digest. The map lookup is by digest (a
    /// SHA-256 of a 256-bit secret), so its timing says nothing useful about the token.
    pub fn principal(&self, hash: &TokenHash) -> Option<Principal> {
        let map = self.principals.read().unwrap_or_else(|e| e.into_inner());
        map.get_key_value(hash)
            .filter(|(k, _)| crate::token::digests_equal(k, hash))
            .map(|(_, p)| p.clone())
    }

    pub fn put_device(&self, id: &str, pk: i64, subject_pk: Option<i64>) {
        self.devices
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned(), DeviceEntry { pk, subject_pk });
    }

    pub fn device(&self, id: &str) -> Option<DeviceEntry> {
        self.devices
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied()
    }

    /// Looks up many devices under one lock acquisition (ingest batches).
    pub fn with_devices<R>(&self, f: impl FnOnce(&dyn Fn(&str) -> Option<DeviceEntry>) -> R) -> R {
        let map = self.devices.read().unwrap_or_else(|e| e.into_inner());
        f(&|id| map.get(id).copied())
    }

    pub fn device_count(&self) -> usize {
        self.devices.read().unwrap_or_else(|e| e.into_inner()).len()
    }
}
