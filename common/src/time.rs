//! The one timestamp format of the system: RFC 3339, UTC, milliseconds,
//! `Z` suffix (`2026-11-23T09:15:43.123Z`).
//!
//! Never reads the clock: callers pass `now` in, so every rule that depends on
//! time is testable without waiting.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

/// A UTC instant, always rendered with millisecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

/// A timestamp string that is not RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 timestamp: {0:?}")]
pub struct TimestampError(pub String);

impl Timestamp {
    /// Wraps a chrono instant, truncated to whole milliseconds so that what is
    /// stored and what is rendered are the same value.
    pub fn from_datetime(at: DateTime<Utc>) -> Self {
        Self::from_unix_millis(at.timestamp_millis())
    }

    /// Milliseconds since the Unix epoch (clamped into chrono's range).
    pub fn from_unix_millis(ms: i64) -> Self {
        let at = Utc
            .timestamp_millis_opt(ms)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        Self(at)
    }

    pub fn unix_millis(self) -> i64 {
        self.0.timestamp_millis()
    }

    pub fn as_datetime(self) -> DateTime<Utc> {
        self.0
    }

    /// This instant shifted by `ms` milliseconds (saturating).
    pub fn plus_millis(self, ms: i64) -> Self {
        Self::from_unix_millis(self.unix_millis().saturating_add(ms))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Millis, true))
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;

    /// Accepts any RFC 3339 offset and converts to UTC.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| Self::from_datetime(t.with_timezone(&Utc)))
            .map_err(|_| TimestampError(s.to_string()))
    }
}

serde_as_text!(Timestamp);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_utc_with_millis() {
        let t: Timestamp = "2026-11-23T10:15:43.123456+01:00".parse().unwrap();
        assert_eq!(t.to_string(), "2026-11-23T09:15:43.123Z");
        let whole: Timestamp = "2026-11-23T09:15:43Z".parse().unwrap();
        assert_eq!(whole.to_string(), "2026-11-23T09:15:43.000Z");
    }

    #[test]
    fn refuses_non_rfc3339() {
        for bad in [
            "",
            "2026-11-23 09:15:43",
            "yesterday",
            "2026-13-01T00:00:00Z",
        ] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn serde_round_trip() {
        let t = Timestamp::from_unix_millis(1_795_000_000_123);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2026-11-18T11:06:40.123Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
    }
}
