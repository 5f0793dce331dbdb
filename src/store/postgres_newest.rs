//! What a PostgreSQL store remembers of each device's newest stored fix that the segment
//! indexer takes (positioned and attributed, `Pt::of`), and when that memory may be
//! trusted: the segment indexer's neighbour before a group of new fixes without a key seek
//! per device (migration postgres/0006 says why).
//!
//! Every statement that writes `fixes` bumps `fix_writes.seq` (a statement trigger), and
//! [`super::PgStore::insert_fixes`] bumps it once more in its insert, reading the value
//! under the row's lock. After this store's commit the count stands at that value plus one
//! (its own bump and the trigger's). So at the next insert, a value of exactly "what the
//! last commit left, plus one" means nobody else wrote fixes in between, and everything
//! remembered is still true; any other value (or a failed transaction) forgets it all.
//!
//! Invariants:
//! - an entry, when present, is exactly the device's newest such fix in `fixes` as
//!   of the commit that `left` counts (`None`: the device has none);
//! - only inserts holding the store's insert lock (see `PgStore::insert_fixes`) read or
//!   change this, one at a time, from before their insert to after their commit.

use std::collections::HashMap;

use super::lawful::Pt;

#[derive(Debug, Default)]
pub(super) struct Newest {
    /// `fix_writes.seq` as this store's last commit left it; `None` after a failure or
    /// before the first commit.
    left: Option<i64>,
    last: HashMap<i64, Option<Pt>>,
}

impl Newest {
    /// Called with the count the insert read under the row's lock: keeps what is remembered
    /// when nobody else wrote fixes since this store's last commit, forgets it otherwise.
    pub(super) fn check(&mut self, seq: i64) {
        if self.left.is_none_or(|left| left + 1 != seq) {
            self.last.clear();
        }
        self.left = None;
    }

    /// The device's newest such stored fix when known (`Some(None)`: it has none).
    pub(super) fn get(&self, device_pk: i64) -> Option<Option<Pt>> {
        self.last.get(&device_pk).copied()
    }

    /// The transaction that read `seq` committed, leaving the devices' newest fixes as
    /// `learned` says (`None`: not known).
    pub(super) fn committed(&mut self, seq: i64, learned: Vec<(i64, Option<Option<Pt>>)>) {
        for (device_pk, newest) in learned {
            match newest {
                Some(p) => self.last.insert(device_pk, p),
                None => self.last.remove(&device_pk),
            };
        }
        self.left = Some(seq + 1);
    }

    /// The transaction failed or its outcome is unknown: nothing is trusted.
    pub(super) fn forget(&mut self) {
        self.left = None;
        self.last.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(ts: i64) -> Pt {
        Pt {
            device_pk: 1,
            ts,
            lat_e7: 0,
            lon_e7: 0,
        }
    }

    #[test]
    fn memory_holds_only_from_one_commit_to_the_next_write() {
        let mut n = Newest::default();
        n.check(7);
        n.committed(7, vec![(1, Some(Some(pt(10)))), (2, Some(None))]);
        n.check(9);
        assert_eq!(n.get(1), Some(Some(pt(10))));
        assert_eq!(n.get(2), Some(None));
        n.committed(9, vec![(1, None)]);
        assert_eq!(n.get(1), None, "learned as unknown");
        // someone else wrote: 10 left, 12 read
        n.check(12);
        assert_eq!(n.get(2), None);
        n.committed(12, vec![(3, Some(Some(pt(5))))]);
        n.forget();
        n.check(14);
        assert_eq!(n.get(3), None, "a failure forgets everything");
    }
}
