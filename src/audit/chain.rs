//! The audit hash chain: sealing entries and verifying the stored chain.
//!
//! ## Chain rule
//! Entries have consecutive ids starting at 1; `id` order is chain order. For entry `n`:
//!
//! ```text
//! prev_hash(1) = "0000…0000"  (64 zeros, GENESIS_HASH)
//! prev_hash(n) = hash(n − 1)
//! hash(n)      = lowercase_hex(SHA-256(unhex(prev_hash(n)) ‖ canonical(n)))
//! ```
//!
//! `unhex(prev_hash)` is the 32 raw bytes of the previous hash.
//!
//! Ids must be assigned by the appender as `head id + 1` inside the transaction that
//! appends (which serialises appends), not by an auto-increment sequence: a rolled-back
//! transaction burns a sequence value, and a gap in the ids is reported as a break.
//!
//! ## Canonical content, version 1
//! `canonical(n)` encodes every field except `prev_hash` and `hash`, in this order:
//!
//! ```text
//! canonical = str("tagwatch.audit.v1")
//!           ‖ i64(id) ‖ i64(at_us) ‖ i64(actor)
//!           ‖ str(actor_name) ‖ str(role) ‖ str(action)
//!           ‖ json(parameters)
//!           ‖ (0x00 if justification is null/absent, else 0x01 ‖ json(justification))
//!           ‖ u64(number of subject_ids) ‖ str(subject_id)…   (in stored order)
//!           ‖ i64(result_count)
//!
//! i64(x)  = 8 bytes, big-endian two's complement
//! u64(x)  = 8 bytes, big-endian
//! str(s)  = u64(byte length of s) ‖ the UTF-8 bytes of s
//! json(v) = one tag byte, then
//!   null  'n' (0x6E)         false 'f' (0x66)         true 't' (0x74)
//!   number, when its value is a whole number in [−2^63, 2^63): 'i' ‖ i64(value)
//!           else a whole number in [2^63, 2^64):              'u' ‖ u64(value)
//!           else:                                            'd' ‖ 8 bytes, big-endian
//!                                                              IEEE-754 binary64
//!   string 's' ‖ str(s)
//!   array  'a' ‖ u64(length) ‖ json(item)…
//!   object 'o' ‖ u64(member count) ‖ (str(key) ‖ json(value))…  keys in ascending
//!                                                               byte order of their UTF-8
//! ```
//!
//! Why this shape: every field is length-prefixed or fixed-width, so no two different
//! entries encode to the same bytes, and the encoding needs no JSON text formatting rules
//! (float printing, escaping, key order) that differ between languages and libraries.
//! Numbers are classified by value, not by how they were written (`100`, `100.0` and
//! `1e2` all encode as 'i' 100), so re-serialising the stored JSON (e.g. by a database's
//! JSON type) cannot change a hash. The leading version string lets a future encoding
//! coexist with this one.
//!
//! ## What verification detects
//! [`verify`] walks the entries in id order and stops at the first entry that
//! - does not have the next id (a deleted entry, or rows out of order),
//! - does not point at its predecessor's hash (a deleted, inserted or re-sealed entry), or
//! - whose hash does not match its content (an edited field).
//!
//! When an entry was edited *and* re-sealed, the break shows at the next entry, whose
//! `prev_hash` no longer matches: the tampering is at `first_bad_id` or just before it.
//! The chain alone cannot reveal a truncated tail or a wholesale rewrite of the chain from
//! some entry on; publishing the head hash elsewhere from time to time (a signed log line,
//! the data-protection officer's records) closes that gap. A store that records the head
//! as it appends (PostgreSQL's `audit_head`) verifies with [`Verifier::expecting_head`],
//! which also stops at an entry the recorded head names but the chain does not hold
//! (a truncated tail, unless the recorded head was rewritten too).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Domain and version tag at the start of every canonical encoding.
const ENCODING_TAG: &str = "tagwatch.audit.v1";

/// One stored audit entry (SPEC §2 "Audit").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: i64,
    /// When the access happened, µs since the epoch (server time).
    pub at_us: i64,
    /// User id of whoever made the access.
    pub actor: i64,
    pub actor_name: String,
    pub role: String,
    /// What was done, e.g. `query.crime_scene`, `trail.read`.
    pub action: String,
    /// The request's parameters.
    pub parameters: serde_json::Value,
    /// `{crime_ref, legal_basis, reason}` for lawful queries; `None` otherwise.
    pub justification: Option<serde_json::Value>,
    /// Subjects whose data was disclosed, in the order the answer gave them.
    pub subject_ids: Vec<String>,
    pub result_count: i64,
    pub prev_hash: String,
    pub hash: String,
}

/// An entry before it is sealed onto the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditDraft {
    pub id: i64,
    pub at_us: i64,
    pub actor: i64,
    pub actor_name: String,
    pub role: String,
    pub action: String,
    pub parameters: serde_json::Value,
    pub justification: Option<serde_json::Value>,
    pub subject_ids: Vec<String>,
    pub result_count: i64,
}

/// Sealing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("previous hash {found:?} is not 64 lowercase hex digits")]
    BadPrevHash { found: String },
    /// The store computed entry `id`'s hash itself (PostgreSQL) and got another value.
    #[error("the store sealed audit entry {id} with a hash other than its content's")]
    HashDisagrees { id: i64 },
}

/// Why verification stopped at `first_bad_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChainBreak {
    /// The entry's id is not its predecessor's plus one (the first must be 1).
    IdOutOfSequence { expected: i64, found: i64 },
    /// The entry's `prev_hash` is not its predecessor's `hash` (genesis for the first).
    PrevHashMismatch,
    /// The entry's `hash` does not match its content.
    HashMismatch,
    /// The store recorded this entry, with hash `hash`, as the chain's head when it was
    /// appended (PostgreSQL's `audit_head`), and the chain does not hold it: entries were
    /// deleted from the end (the break is at the first id missing), or the entry was
    /// re-sealed or the recorded head altered (the break is at the entry).
    RecordedHeadMissing { id: i64, hash: String },
}

/// The answer of `GET /v1/audit/verify` / `tagwatch audit verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub ok: bool,
    /// Entries examined.
    pub entries: u64,
    /// Hash of the last entry of the intact prefix: the chain's head when `ok`, the
    /// genesis hash when the chain is empty or its first entry is bad.
    pub head_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<ChainBreak>,
}

/// Borrowed view of the hashed fields, shared by drafts and records.
struct Content<'a> {
    id: i64,
    at_us: i64,
    actor: i64,
    actor_name: &'a str,
    role: &'a str,
    action: &'a str,
    parameters: &'a serde_json::Value,
    justification: Option<&'a serde_json::Value>,
    subject_ids: &'a [String],
    result_count: i64,
}

impl AuditDraft {
    fn content(&self) -> Content<'_> {
        Content {
            id: self.id,
            at_us: self.at_us,
            actor: self.actor,
            actor_name: &self.actor_name,
            role: &self.role,
            action: &self.action,
            parameters: &self.parameters,
            justification: self.justification.as_ref(),
            subject_ids: &self.subject_ids,
            result_count: self.result_count,
        }
    }

    /// The canonical content encoding of this entry (see the module doc).
    pub fn canonical(&self) -> Vec<u8> {
        canonical(&self.content())
    }

    /// The canonical encoding without its id, as the bytes before and after it:
    /// `canonical = before ‖ i64(id) ‖ after`. A store that assigns the id and computes
    /// the hash in one statement, where the head it appends to is known only to the
    /// database, seals with these (see `store/postgres_lawful.rs`).
    pub fn canonical_around_id(&self) -> (Vec<u8>, Vec<u8>) {
        (canonical_before_id(), canonical_after_id(&self.content()))
    }
}

impl AuditRecord {
    fn content(&self) -> Content<'_> {
        Content {
            id: self.id,
            at_us: self.at_us,
            actor: self.actor,
            actor_name: &self.actor_name,
            role: &self.role,
            action: &self.action,
            parameters: &self.parameters,
            justification: self.justification.as_ref(),
            subject_ids: &self.subject_ids,
            result_count: self.result_count,
        }
    }

    /// The canonical content encoding of this entry (see the module doc).
    pub fn canonical(&self) -> Vec<u8> {
        canonical(&self.content())
    }
}

/// Seals `draft` onto a chain whose head hash is `prev_hash` ([`GENESIS_HASH`] for the
/// first entry). The caller sets `draft.id` to the head's id + 1 (1 for the first).
pub fn seal(prev_hash: &str, draft: AuditDraft) -> Result<AuditRecord, ChainError> {
    let hash = chain_hash(prev_hash, &draft.content())?;
    Ok(AuditRecord {
        id: draft.id,
        at_us: draft.at_us,
        actor: draft.actor,
        actor_name: draft.actor_name,
        role: draft.role,
        action: draft.action,
        parameters: draft.parameters,
        justification: draft.justification,
        subject_ids: draft.subject_ids,
        result_count: draft.result_count,
        prev_hash: prev_hash.to_owned(),
        hash,
    })
}

/// Verifies a whole chain given in id order. See [`Verifier`] to stream a long one.
pub fn verify(records: &[AuditRecord]) -> VerifyReport {
    let mut v = Verifier::new();
    for r in records {
        v.push(r);
    }
    v.report()
}

/// Incremental verification, so the store can page through a long chain: `push` every
/// entry in id order, then take the `report`.
#[derive(Debug, Clone)]
pub struct Verifier {
    entries: u64,
    next_id: i64,
    head_hash: String,
    broken: Option<(i64, ChainBreak)>,
    /// A head the store recorded before the walk, and whether the walk has met it.
    recorded: Option<(i64, String, bool)>,
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Verifier {
    pub fn new() -> Self {
        Self {
            entries: 0,
            next_id: 1,
            head_hash: GENESIS_HASH.to_owned(),
            broken: None,
            recorded: None,
        }
    }

    /// Verification that also requires the chain to hold entry `id` with hash `hash`: a
    /// head the store recorded, read before the walk starts (entries appended during the
    /// walk come after it). Catches what the links alone cannot: entries deleted from the
    /// end of the chain. `id` 0, an empty chain's head, requires nothing.
    pub fn expecting_head(id: i64, hash: &str) -> Self {
        Self {
            recorded: (id > 0).then(|| (id, hash.to_owned(), false)),
            ..Self::new()
        }
    }

    /// Checks the next entry. After the first break entries are only counted.
    pub fn push(&mut self, r: &AuditRecord) {
        self.entries += 1;
        if self.broken.is_some() {
            return;
        }
        let problem = if r.id != self.next_id {
            Some(ChainBreak::IdOutOfSequence {
                expected: self.next_id,
                found: r.id,
            })
        } else if r.prev_hash != self.head_hash {
            Some(ChainBreak::PrevHashMismatch)
        } else if chain_hash(&r.prev_hash, &r.content()).ok().as_deref() != Some(r.hash.as_str()) {
            Some(ChainBreak::HashMismatch)
        } else {
            match &mut self.recorded {
                Some((id, hash, met)) if *id == r.id => {
                    *met = true;
                    (*hash != r.hash).then(|| ChainBreak::RecordedHeadMissing {
                        id: *id,
                        hash: hash.clone(),
                    })
                }
                _ => None,
            }
        };
        match problem {
            Some(p) => self.broken = Some((r.id, p)),
            None => {
                self.next_id = r.id.saturating_add(1);
                self.head_hash.clone_from(&r.hash);
            }
        }
    }

    pub fn report(&self) -> VerifyReport {
        let missing_head = match &self.recorded {
            Some((id, hash, false)) => Some((
                self.next_id,
                ChainBreak::RecordedHeadMissing {
                    id: *id,
                    hash: hash.clone(),
                },
            )),
            _ => None,
        };
        let broken = self.broken.clone().or(missing_head);
        VerifyReport {
            ok: broken.is_none(),
            entries: self.entries,
            head_hash: self.head_hash.clone(),
            first_bad_id: broken.as_ref().map(|b| b.0),
            problem: broken.map(|b| b.1),
        }
    }
}

/// `lowercase_hex(SHA-256(unhex(prev_hash) ‖ canonical(content)))`.
fn chain_hash(prev_hash: &str, content: &Content<'_>) -> Result<String, ChainError> {
    let bad = || ChainError::BadPrevHash {
        found: prev_hash.to_owned(),
    };
    // Only the lowercase form is accepted, so one hash has exactly one spelling.
    if prev_hash.len() != 64
        || !prev_hash
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(bad());
    }
    let prev = hex::decode(prev_hash).map_err(|_| bad())?;
    let mut h = Sha256::new();
    h.update(&prev);
    h.update(canonical(content));
    Ok(hex::encode(h.finalize()))
}

fn canonical(c: &Content<'_>) -> Vec<u8> {
    let mut out = canonical_before_id();
    put_i64(&mut out, c.id);
    out.extend_from_slice(&canonical_after_id(c));
    out
}

fn canonical_before_id() -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    put_str(&mut out, ENCODING_TAG);
    out
}

fn canonical_after_id(c: &Content<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    put_i64(&mut out, c.at_us);
    put_i64(&mut out, c.actor);
    put_str(&mut out, c.actor_name);
    put_str(&mut out, c.role);
    put_str(&mut out, c.action);
    put_json(&mut out, c.parameters);
    // A stored JSON null justification means the same as none at all.
    match c.justification {
        None | Some(serde_json::Value::Null) => out.push(0x00),
        Some(v) => {
            out.push(0x01);
            put_json(&mut out, v);
        }
    }
    put_u64(&mut out, c.subject_ids.len() as u64);
    for s in c.subject_ids {
        put_str(&mut out, s);
    }
    put_i64(&mut out, c.result_count);
    out
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// 2^63 as an f64 (exact).
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

fn put_json(out: &mut Vec<u8>, v: &serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Null => out.push(b'n'),
        Value::Bool(false) => out.push(b'f'),
        Value::Bool(true) => out.push(b't'),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push(b'i');
                put_i64(out, i);
            } else if let Some(u) = n.as_u64() {
                out.push(b'u');
                put_u64(out, u);
            } else {
                // serde_json numbers are finite; a float holding a whole number is
                // encoded as that integer so `1e2` and `100` hash the same.
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() == 0.0 && (-TWO_POW_63..TWO_POW_63).contains(&f) {
                    out.push(b'i');
                    put_i64(out, f as i64);
                } else if f.fract() == 0.0 && (TWO_POW_63..2.0 * TWO_POW_63).contains(&f) {
                    out.push(b'u');
                    put_u64(out, f as u64);
                } else {
                    out.push(b'd');
                    out.extend_from_slice(&f.to_bits().to_be_bytes());
                }
            }
        }
        Value::String(s) => {
            out.push(b's');
            put_str(out, s);
        }
        Value::Array(items) => {
            out.push(b'a');
            put_u64(out, items.len() as u64);
            for item in items {
                put_json(out, item);
            }
        }
        Value::Object(map) => {
            out.push(b'o');
            put_u64(out, map.len() as u64);
            // Sort explicitly: serde_json's map keeps insertion order when any crate in
            // the build enables its `preserve_order` feature.
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            for (k, v) in members {
                put_str(out, k);
                put_json(out, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn draft(id: i64) -> AuditDraft {
        AuditDraft {
            id,
            at_us: 1_700_000_000_000_000 + id * 1_000_000,
            actor: 3,
            actor_name: "analyst.one".into(),
            role: "analyst".into(),
            action: "query.crime_scene".into(),
            parameters: json!({"lat": 51.5074, "lon": -0.1278, "radius_m": 200, "from": "2024-06-01T10:00:00Z"}),
            justification: Some(
                json!({"crime_ref": "CR-1", "legal_basis": "s.2 PACE", "reason": "burglary"}),
            ),
            subject_ids: vec!["GTO-00017".into(), "GTO-00042".into()],
            result_count: 2,
        }
    }

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for id in 1..=n {
            let prev = out
                .last()
                .map_or(GENESIS_HASH.to_owned(), |r| r.hash.clone());
            match seal(&prev, draft(id)) {
                Ok(r) => out.push(r),
                Err(e) => panic!("{e}"),
            }
        }
        out
    }

    #[test]
    fn an_intact_chain_verifies_and_reports_its_head() {
        let c = chain(5);
        let r = verify(&c);
        assert_eq!(
            r,
            VerifyReport {
                ok: true,
                entries: 5,
                head_hash: c[4].hash.clone(),
                first_bad_id: None,
                problem: None,
            }
        );
        assert_eq!(c[0].prev_hash, GENESIS_HASH);
        assert_eq!(c[1].prev_hash, c[0].hash);
    }

    #[test]
    fn an_empty_chain_is_intact_with_the_genesis_head() {
        let r = verify(&[]);
        assert!(r.ok);
        assert_eq!((r.entries, r.head_hash.as_str()), (0, GENESIS_HASH));
    }

    #[test]
    fn the_first_hash_is_sha256_of_32_zero_bytes_and_the_canonical_content() {
        let c = chain(1);
        let mut h = Sha256::new();
        h.update([0u8; 32]);
        h.update(draft(1).canonical());
        assert_eq!(c[0].hash, hex::encode(h.finalize()));
        assert_eq!(c[0].canonical(), draft(1).canonical());
    }

    fn verify_expecting(records: &[AuditRecord], id: i64, hash: &str) -> VerifyReport {
        let mut v = Verifier::expecting_head(id, hash);
        for r in records {
            v.push(r);
        }
        v.report()
    }

    #[test]
    fn a_recorded_head_the_chain_holds_verifies_and_later_entries_do_not_matter() {
        let c = chain(5);
        assert!(verify_expecting(&c, 5, &c[4].hash).ok);
        // appended after the head was read
        assert!(verify_expecting(&c, 3, &c[2].hash).ok);
        assert!(verify_expecting(&[], 0, GENESIS_HASH).ok);
    }

    #[test]
    fn entries_deleted_from_the_end_break_at_the_first_missing_id() {
        let c = chain(5);
        let r = verify_expecting(&c[..3], 5, &c[4].hash);
        assert!(!r.ok);
        assert_eq!(r.first_bad_id, Some(4));
        assert_eq!(
            r.problem,
            Some(ChainBreak::RecordedHeadMissing {
                id: 5,
                hash: c[4].hash.clone()
            })
        );
        // without the recorded head the shorter chain is intact
        assert!(verify(&c[..3]).ok);
        // a chain deleted whole
        assert_eq!(verify_expecting(&[], 5, &c[4].hash).first_bad_id, Some(1));
    }

    #[test]
    fn a_resealed_head_entry_breaks_at_itself_and_an_earlier_break_comes_first() {
        let mut c = chain(5);
        let mut d = draft(5);
        d.result_count = 99;
        c[4] = seal(&c[3].hash, d).unwrap();
        let r = verify_expecting(&c, 5, &chain(5)[4].hash);
        assert_eq!(r.first_bad_id, Some(5));
        assert_eq!(r.head_hash, c[3].hash, "the intact prefix ends before it");
        c[1].result_count = 7;
        let r = verify_expecting(&c, 5, &chain(5)[4].hash);
        assert_eq!(
            (r.first_bad_id, r.problem),
            (Some(2), Some(ChainBreak::HashMismatch))
        );
    }

    #[test]
    fn the_encoding_around_the_id_is_the_encoding_with_the_id_cut_out() {
        let d = draft(7);
        let (before, after) = d.canonical_around_id();
        let mut joined = before;
        joined.extend_from_slice(&7i64.to_be_bytes());
        joined.extend_from_slice(&after);
        assert_eq!(joined, d.canonical());
        // the id is not in either part: another id gives the same parts
        let other = AuditDraft { id: 8, ..d.clone() };
        assert_eq!(other.canonical_around_id(), d.canonical_around_id());
    }

    #[test]
    fn the_canonical_encoding_is_pinned() {
        // A known vector for auditors re-implementing the encoding.
        let d = AuditDraft {
            id: 1,
            at_us: 2,
            actor: 3,
            actor_name: "a".into(),
            role: "r".into(),
            action: "x".into(),
            parameters: json!({"b": [true, null], "a": 1.5}),
            justification: None,
            subject_ids: vec!["S".into()],
            result_count: -1,
        };
        let mut want = Vec::new();
        want.extend_from_slice(&17u64.to_be_bytes());
        want.extend_from_slice(b"tagwatch.audit.v1");
        for v in [1i64, 2, 3] {
            want.extend_from_slice(&v.to_be_bytes());
        }
        for s in ["a", "r", "x"] {
            want.extend_from_slice(&1u64.to_be_bytes());
            want.extend_from_slice(s.as_bytes());
        }
        want.push(b'o');
        want.extend_from_slice(&2u64.to_be_bytes());
        want.extend_from_slice(&1u64.to_be_bytes());
        want.push(b'a');
        want.push(b'd');
        want.extend_from_slice(&1.5f64.to_bits().to_be_bytes());
        want.extend_from_slice(&1u64.to_be_bytes());
        want.push(b'b');
        want.push(b'a');
        want.extend_from_slice(&2u64.to_be_bytes());
        want.extend_from_slice(b"tn");
        want.push(0x00);
        want.extend_from_slice(&1u64.to_be_bytes());
        want.extend_from_slice(&1u64.to_be_bytes());
        want.push(b'S');
        want.extend_from_slice(&(-1i64).to_be_bytes());
        assert_eq!(d.canonical(), want);
    }

    #[test]
    fn key_order_and_number_spelling_do_not_change_the_hash() {
        let mut a = draft(1);
        let mut b = draft(1);
        a.parameters =
            serde_json::from_str(r#"{"x": 100, "y": {"q": 1, "p": 2.5}}"#).unwrap_or_default();
        b.parameters =
            serde_json::from_str(r#"{"y": {"p": 2.5, "q": 1e0}, "x": 100.0}"#).unwrap_or_default();
        assert_eq!(a.canonical(), b.canonical());
        let (ra, rb) = (seal(GENESIS_HASH, a), seal(GENESIS_HASH, b));
        assert_eq!(ra.map(|r| r.hash), rb.map(|r| r.hash));
    }

    #[test]
    fn a_null_and_an_absent_justification_hash_the_same_but_an_empty_one_differs() {
        let mut a = draft(1);
        a.justification = None;
        let mut b = draft(1);
        b.justification = Some(serde_json::Value::Null);
        let mut c = draft(1);
        c.justification = Some(json!({}));
        assert_eq!(a.canonical(), b.canonical());
        assert_ne!(a.canonical(), c.canonical());
    }

    #[test]
    fn moving_a_byte_between_adjacent_strings_changes_the_encoding() {
        let mut a = draft(1);
        a.actor_name = "ab".into();
        a.role = "c".into();
        let mut b = draft(1);
        b.actor_name = "a".into();
        b.role = "bc".into();
        assert_ne!(a.canonical(), b.canonical());
    }

    #[test]
    fn an_edited_field_is_reported_at_that_entry() {
        type Edit = fn(&mut AuditRecord);
        let edits: [Edit; 10] = [
            |r| r.at_us += 1,
            |r| r.actor = 99,
            |r| r.actor_name.push('x'),
            |r| r.role = "admin".into(),
            |r| r.action = "trail.read".into(),
            |r| r.parameters["radius_m"] = json!(201),
            |r| r.justification = None,
            |r| {
                r.subject_ids.pop();
            },
            |r| r.subject_ids.reverse(),
            |r| r.result_count = 0,
        ];
        for (i, edit) in edits.iter().enumerate() {
            let mut c = chain(5);
            edit(&mut c[2]);
            let r = verify(&c);
            assert!(!r.ok, "edit {i}");
            assert_eq!(r.first_bad_id, Some(3), "edit {i}");
            assert_eq!(r.problem, Some(ChainBreak::HashMismatch), "edit {i}");
            assert_eq!(r.head_hash, c[1].hash);
            assert_eq!(r.entries, 5);
        }
    }

    #[test]
    fn an_edited_and_resealed_entry_breaks_the_link_to_the_next() {
        let mut c = chain(5);
        let mut d = draft(3);
        d.result_count = 0;
        c[2] = seal(&c[1].hash, d).unwrap_or_else(|e| panic!("{e}"));
        let r = verify(&c);
        assert_eq!(r.first_bad_id, Some(4));
        assert_eq!(r.problem, Some(ChainBreak::PrevHashMismatch));
    }

    #[test]
    fn a_deleted_entry_is_detected_by_the_id_gap() {
        let mut c = chain(5);
        c.remove(2);
        let r = verify(&c);
        assert_eq!(r.first_bad_id, Some(4));
        assert_eq!(
            r.problem,
            Some(ChainBreak::IdOutOfSequence {
                expected: 3,
                found: 4
            })
        );
    }

    #[test]
    fn a_deleted_and_renumbered_entry_is_detected_by_the_broken_link() {
        let mut c = chain(5);
        c.remove(2);
        for (i, r) in c.iter_mut().enumerate() {
            r.id = i as i64 + 1;
        }
        let r = verify(&c);
        assert_eq!(r.first_bad_id, Some(3));
        assert_eq!(r.problem, Some(ChainBreak::PrevHashMismatch));
    }

    #[test]
    fn deleting_the_first_entry_is_detected() {
        let mut c = chain(3);
        c.remove(0);
        let r = verify(&c);
        assert_eq!(r.first_bad_id, Some(2));
        assert_eq!(r.head_hash, GENESIS_HASH);
    }

    #[test]
    fn reordered_entries_are_detected() {
        let mut c = chain(5);
        c.swap(1, 3);
        let r = verify(&c);
        assert!(!r.ok);
        assert_eq!(r.first_bad_id, Some(4));
        // Swapping contents but keeping ids in place breaks the hashes instead.
        let mut c = chain(5);
        let (a, b) = (c[1].id, c[3].id);
        c.swap(1, 3);
        c[1].id = a;
        c[3].id = b;
        let r = verify(&c);
        assert_eq!(r.first_bad_id, Some(2));
    }

    #[test]
    fn an_edited_hash_or_prev_hash_is_detected() {
        let mut c = chain(3);
        c[1].hash = c[1].hash.replace(|ch: char| ch != '0', "0");
        assert_eq!(verify(&c).first_bad_id, Some(2));
        let mut c = chain(3);
        c[1].prev_hash = GENESIS_HASH.into();
        assert_eq!(verify(&c).first_bad_id, Some(2));
        let mut c = chain(3);
        c[1].hash = c[1].hash.to_uppercase();
        assert_eq!(verify(&c).first_bad_id, Some(2));
    }

    #[test]
    fn sealing_onto_a_malformed_head_hash_is_refused() {
        for bad in ["", "00", &GENESIS_HASH.replace('0', "A"), &"g".repeat(64)] {
            assert!(matches!(
                seal(bad, draft(1)),
                Err(ChainError::BadPrevHash { .. })
            ));
        }
    }

    #[test]
    fn a_streamed_verification_equals_the_whole_one() {
        let mut c = chain(6);
        c[4].action = "edited".into();
        let mut v = Verifier::new();
        for r in &c {
            v.push(r);
        }
        assert_eq!(v.report(), verify(&c));
    }

    #[test]
    fn a_record_survives_a_json_round_trip_and_still_verifies() {
        let c = chain(3);
        let text = serde_json::to_string(&c).unwrap_or_default();
        let back: Vec<AuditRecord> = serde_json::from_str(&text).unwrap_or_default();
        assert!(verify(&back).ok);
    }
}
