//! Time for every meshql crate: wall-clock milliseconds since the Unix epoch, their RFC 3339
//! forms, and the time formats meshql accepts (time travel, `asOf`).

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The shortest exact RFC 3339 UTC form: `2024-06-01T00:00:00Z`, `2024-06-01T00:00:00.250Z`
/// (table names with a time suffix, messages about versions).
pub fn rfc3339(ms: i64) -> String {
    format(ms, SecondsFormat::AutoSi)
}

/// RFC 3339 UTC with milliseconds, always: `2026-11-22T13:54:01.123Z` (audit and quality times,
/// which line up in columns).
pub fn rfc3339_millis(ms: i64) -> String {
    format(ms, SecondsFormat::Millis)
}

fn format(ms: i64, seconds: SecondsFormat) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(seconds, true))
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// An RFC 3339 time, `YYYY-MM-DD HH:MM[:SS[.fff]]` (UTC, `T` or a space) or a date (midnight
/// UTC), as epoch milliseconds.
pub fn parse(spec: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(spec) {
        return Some(t.timestamp_millis());
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(spec, format) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    NaiveDate::parse_from_str(spec, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(1_795_355_641_123), "2026-11-22T13:54:01.123Z");
        assert_eq!(rfc3339_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(i64::MAX), format!("{} ms", i64::MAX));
        for spec in [
            "2000-02-29T00:00:00Z",
            "2000-02-29 00:00:00",
            "2000-02-29T00:00",
            "2000-02-29",
        ] {
            assert_eq!(parse(spec), Some(951_782_400_000), "{spec}");
        }
        assert_eq!(parse("2000-02-30"), None);
    }
}
