//! What a PostgreSQL store remembers of the external ids of devices and subjects by store
//! key, so that a crime-scene answer names its matches without a round trip for ids it has
//! named before (one statement fewer on most lookups; see docs/BENCHMARKS.md "Crime-scene: the hits
//! filter, the islands' edges and the ids").
//!
//! Safe to keep for the life of the store, and right in every service instance that shares
//! the database: a key's id never changes (no statement updates `devices.id` or
//! `subjects.id`, nothing deletes those rows, and a sequence never hands a key out twice),
//! and only rows read from the database are remembered. It holds at most one entry per
//! device and subject the store has, a few dozen bytes each.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

#[derive(Debug, Default)]
pub(super) struct Ids {
    known: Mutex<Known>,
}

#[derive(Debug, Default)]
struct Known {
    devices: HashMap<i64, String>,
    subjects: HashMap<i64, String>,
}

/// Ids looked up by [`Ids::lookup`]: those known, and the keys still to read.
pub(super) struct Lookup {
    pub devices: HashMap<i64, String>,
    pub subjects: HashMap<i64, String>,
    pub missing_devices: Vec<i64>,
    pub missing_subjects: Vec<i64>,
}

impl Ids {
    pub fn lookup(&self, device_pks: &[i64], subject_pks: &[i64]) -> Lookup {
        let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        let split = |keys: &[i64], map: &HashMap<i64, String>| {
            let mut found = HashMap::with_capacity(keys.len());
            let mut missing = Vec::new();
            for &k in keys {
                match map.get(&k) {
                    Some(id) => {
                        found.insert(k, id.clone());
                    }
                    None => missing.push(k),
                }
            }
            (found, missing)
        };
        let (devices, missing_devices) = split(device_pks, &known.devices);
        let (subjects, missing_subjects) = split(subject_pks, &known.subjects);
        Lookup {
            devices,
            subjects,
            missing_devices,
            missing_subjects,
        }
    }

    /// Remembers ids read from the database.
    pub fn learn(&self, devices: &HashMap<i64, String>, subjects: &HashMap<i64, String>) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        for (k, id) in devices {
            known.devices.insert(*k, id.clone());
        }
        for (k, id) in subjects {
            known.subjects.insert(*k, id.clone());
        }
    }
}
