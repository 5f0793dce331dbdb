//! Plain domain types: ids, fixes, roles, time — serde and validation, no I/O.

pub mod fix;
pub mod geometry;
pub mod ids;
pub mod role;
pub mod schedule;
pub mod time;

pub use fix::{Fix, FixSource, PingIn};
pub use ids::{DeviceId, InvalidId, SubjectId};
pub use role::Role;
pub use time::Micros;
