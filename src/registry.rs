//! In-memory caches of the small, hot tables: who holds which token, and which subject each
//! device is assigned to. Ingest consults both for every ping, so they must not cost a
//! database round trip. The store stays the source of truth: the caches are filled from it
//! at start and updated by the same code path that writes it.
//!
//! Locks are `std::sync::RwLock`s held only for a lookup or an insert, never across `.await`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Revocations so far, counted under the principals' write lock. A store read that began
    /// before a revocation may hold the revoked token, so what it read is cached only if this
    /// has not moved since it began.
    revocations: AtomicU64,
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

    /// The revocation count, to be read before a store read of users (see [`Self::add_user_since`]).
    pub fn revocations(&self) -> u64 {
        self.revocations.load(Ordering::Acquire)
    }

    /// Caches `u`, read from the store after [`Self::revocations`] returned `seen`, unless a
    /// token has been revoked since (the row may then be the revoked one). True if cached.
    pub fn add_user_since(&self, u: &UserRow, seen: u64) -> bool {
        let Some((h, p)) = principal(u) else {
            return false;
        };
        let mut map = self.principals.write().unwrap_or_else(|e| e.into_inner());
        if self.revocations.load(Ordering::Acquire) != seen {
            return false;
        }
        map.insert(h, p);
        true
    }

    /// Drops every cached token of `user_id` at once (revocation; the store has already
    /// replaced its digest).
    pub fn remove_user(&self, user_id: i64) {
        let mut map = self.principals.write().unwrap_or_else(|e| e.into_inner());
        self.revocations.fetch_add(1, Ordering::AcqRel);
        map.retain(|_, p| p.user_id != user_id);
    }

    /// Makes the token cache the store's `users`, read after [`Self::revocations`] returned
    /// `seen`, unless a token was revoked since. This is how a token revoked by another
    /// process (`tagwatch user revoke`) leaves a running service's cache.
    pub fn replace_users(&self, users: &[UserRow], seen: u64) -> bool {
        let fresh: HashMap<TokenHash, Principal> = users.iter().filter_map(principal).collect();
        let mut map = self.principals.write().unwrap_or_else(|e| e.into_inner());
        if self.revocations.load(Ordering::Acquire) != seen {
            return false;
        }
        *map = fresh;
        true
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
