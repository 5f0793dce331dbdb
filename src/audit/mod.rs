//! The audit trail (SPEC §2 "Audit", §5 "Audit integrity"): every consultation,
//! disclosure or change is one append-only entry, and the entries form a hash chain so
//! that editing, deleting or reordering any stored entry is detected by `verify`.
//!
//! Layout:
//! - [`chain`] — the entry type, its canonical encoding, sealing a new entry onto the
//!   chain and verifying a stored chain. Pure: the store appends and reads the rows.

pub mod chain;
