//! Serde helpers for integers in request bodies.
//!
//! JSON has one number type, and JSON Schema's `integer` admits any number whose value is
//! whole, `60.0` as much as `60` (the OpenAPI document promises exactly that), while serde
//! reads an `i64` only from a number written without a fraction. These helpers accept both
//! and refuse anything that is not a whole number in range.

use serde::de::Error;
use serde::{Deserialize, Deserializer};

/// `2^63` as an `f64`: whole floats in `[-2^63, 2^63)` convert to `i64` exactly.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

/// `Option<i64>` from a whole JSON number (`60` or `60.0`) or `null`.
pub fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Option::<serde_json::Number>::deserialize(d)?
        .map(|n| whole(&n).ok_or_else(|| D::Error::custom(format!("{n} is not an integer"))))
        .transpose()
}

fn whole(n: &serde_json::Number) -> Option<i64> {
    n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && (-TWO_POW_63..TWO_POW_63).contains(f))
            .map(|f| f as i64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct T {
        #[serde(default, deserialize_with = "optional")]
        n: Option<i64>,
    }

    fn n(json: &str) -> Result<Option<i64>, serde_json::Error> {
        serde_json::from_str::<T>(json).map(|t| t.n)
    }

    #[test]
    fn a_whole_number_is_read_with_or_without_a_fraction() {
        assert_eq!(n(r#"{"n": 60}"#).ok(), Some(Some(60)));
        assert_eq!(n(r#"{"n": 60.0}"#).ok(), Some(Some(60)));
        assert_eq!(n(r#"{"n": -778.0}"#).ok(), Some(Some(-778)));
        assert_eq!(n(r#"{"n": null}"#).ok(), Some(None));
        assert_eq!(n(r#"{}"#).ok(), Some(None));
    }

    #[test]
    fn fractions_strings_and_numbers_out_of_range_are_refused() {
        assert!(n(r#"{"n": 1.5}"#).is_err());
        assert!(n(r#"{"n": "60"}"#).is_err());
        assert!(n(r#"{"n": 1e19}"#).is_err());
        assert!(n(r#"{"n": 18446744073709551615}"#).is_err());
    }
}
