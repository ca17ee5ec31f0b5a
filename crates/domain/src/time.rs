//! Event time. Readings carry the time they were measured; everything downstream (latest
//! value, windows, late-data rules) is decided on it, never on arrival time.
//!
//! A timestamp is any `i64` on the wire, but only [`Timestamp::MIN`]..=[`Timestamp::MAX`]
//! (years 0001 to 9999) means a time: that is what RFC 3339, `google.protobuf.Timestamp`,
//! PostgreSQL and the Avro readers of other languages (Python's `datetime`, ...) can all
//! represent. Whoever takes a timestamp from outside checks [`Timestamp::in_range`].

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, UTC: Avro's `timestamp-micros`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// 0001-01-01T00:00:00Z: the earliest time we accept.
    pub const MIN: Timestamp = Timestamp(-62_135_596_800_000_000);
    /// 9999-12-31T23:59:59.999999Z: the latest time we accept.
    pub const MAX: Timestamp = Timestamp(253_402_300_799_999_999);

    /// Wall-clock now.
    pub fn now() -> Self {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Self(since.as_micros() as i64)
    }

    /// From milliseconds since the epoch (the unit most gateways send).
    pub fn from_millis(ms: i64) -> Self {
        Self(ms.saturating_mul(1000))
    }

    /// Microseconds since the epoch.
    pub fn as_micros(self) -> i64 {
        self.0
    }

    /// Whether this is a time between [`Timestamp::MIN`] and [`Timestamp::MAX`].
    pub fn in_range(self) -> bool {
        (Self::MIN..=Self::MAX).contains(&self)
    }

    /// Whole milliseconds from `earlier` to `self` (negative when `earlier` is later), or
    /// `None` when the difference does not fit an `i64` (only out-of-range timestamps).
    pub fn millis_since(self, earlier: Timestamp) -> Option<i64> {
        self.0.checked_sub(earlier.0).map(|micros| micros / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accepted_range_is_years_0001_to_9999() {
        assert_eq!(crate::rfc3339::parse("0001-01-01T00:00:00Z").unwrap(), Timestamp::MIN);
        assert_eq!(crate::rfc3339::parse("9999-12-31T23:59:59.999999Z").unwrap(), Timestamp::MAX);
        assert!(Timestamp::MIN.in_range() && Timestamp::MAX.in_range() && Timestamp::now().in_range());
        assert!(!Timestamp(Timestamp::MIN.0 - 1).in_range());
        assert!(!Timestamp(Timestamp::MAX.0 + 1).in_range());
        assert!(!Timestamp(i64::MIN).in_range() && !Timestamp(i64::MAX).in_range());
    }

    #[test]
    fn millis_since_does_not_overflow() {
        assert_eq!(Timestamp(5_000).millis_since(Timestamp(2_000)), Some(3));
        assert_eq!(Timestamp(2_000).millis_since(Timestamp(5_000)), Some(-3));
        assert_eq!(Timestamp::now().millis_since(Timestamp(i64::MIN)), None);
        assert_eq!(Timestamp(i64::MIN).millis_since(Timestamp(1)), None);
        assert!(Timestamp::MAX.millis_since(Timestamp::MIN).is_some(), "any two in-range times subtract");
    }
}
