//! External identifiers: subject references and device serials (SPEC §1).
//!
//! Both are 1–64 characters of `[A-Za-z0-9._-]`, parsed once at the edge so the rest of the
//! code never sees an unchecked id.

use serde::{Deserialize, Serialize};

/// An id that breaks the character or length rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} id {value:?}: 1–64 characters of A-Z a-z 0-9 . _ -")]
pub struct InvalidId {
    pub kind: &'static str,
    pub value: String,
}

fn check(kind: &'static str, s: &str) -> Result<(), InvalidId> {
    let ok = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(InvalidId {
            kind,
            value: s.chars().take(80).collect(),
        })
    }
}

macro_rules! external_id {
    ($name:ident, $kind:literal) => {
        #[doc = concat!("A validated ", $kind, " id.")]
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: impl Into<String>) -> Result<Self, InvalidId> {
                let s = s.into();
                check($kind, &s)?;
                Ok(Self(s))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, InvalidId> {
                Self::parse(s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

external_id!(SubjectId, "subject");
external_id!(DeviceId, "device");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_the_documented_alphabet() {
        assert!(SubjectId::parse("GTO-00017").is_ok());
        assert!(DeviceId::parse("a.b_c-1").is_ok());
    }

    #[test]
    fn ids_reject_empty_long_and_foreign_characters() {
        assert!(SubjectId::parse("").is_err());
        assert!(SubjectId::parse("x".repeat(65)).is_err());
        assert!(DeviceId::parse("tag 1").is_err());
        assert!(DeviceId::parse("tag/1").is_err());
        assert!(DeviceId::parse("é").is_err());
    }
}
