//! Validation of the request fields several methods share: page sizes, times, ranges, bucket
//! widths, and "exactly one of asset_id and sensor_id". Each check returns the value the
//! service works with (microseconds, a row count) or an `INVALID_ARGUMENT` naming the field
//! and what to send instead. Pure functions, so every rule is unit tested here.

use crate::QuerySettings;
use crate::cursor::Subject;
use crate::error::QueryError;

/// Most buckets one `Aggregate` may return per sensor.
pub const MAX_BUCKETS: i64 = 10_000;
/// Narrowest bucket: finer than the gateways' resolution would mostly return single readings.
pub const MIN_BUCKET_WIDTH_MICROS: i64 = 1_000_000;

/// `google.protobuf.Timestamp`'s valid range (0001-01-01 to 9999-12-31), which PostgreSQL
/// also covers: anything outside is refused here, not by the database.
const MIN_SECONDS: i64 = -62_135_596_800;
const MAX_SECONDS: i64 = 253_402_300_799;

/// Rows per page: 0 means the configured default; above the maximum is an error rather than a
/// silent cap, so a client never mistakes a short page for the end.
pub fn page_size(requested: i32, settings: &QuerySettings) -> Result<usize, QueryError> {
    match requested {
        0 => Ok(settings.default_page_size as usize),
        n if n < 0 => Err(QueryError::invalid("page_size", format!("{n} is negative; send 0 for the default"))),
        n if n as u32 > settings.max_page_size => Err(QueryError::invalid(
            "page_size",
            format!("{n} is above the maximum of {}; ask for fewer and follow next_page_token", settings.max_page_size),
        )),
        n => Ok(n as usize),
    }
}

/// Microseconds since the Unix epoch of a timestamp, rounded *up* to the microsecond, which
/// keeps a half-open range exact: a reading at `t` µs is at or after `start` exactly when
/// `t >= ceil(start)`, and before `end` exactly when `t < ceil(end)`.
pub fn time(field: &str, timestamp: &prost_types::Timestamp) -> Result<i64, QueryError> {
    if !(0..1_000_000_000).contains(&timestamp.nanos) {
        return Err(QueryError::invalid(field, format!("nanos {} must be in 0..999999999", timestamp.nanos)));
    }
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&timestamp.seconds) {
        return Err(QueryError::invalid(field, "must be between 0001-01-01 and 9999-12-31"));
    }
    // In range, so this cannot overflow.
    Ok(timestamp.seconds * 1_000_000 + div_ceil(i64::from(timestamp.nanos), 1000))
}

/// An optional range bound: unset means unbounded.
pub fn optional_time(field: &str, timestamp: Option<&prost_types::Timestamp>) -> Result<Option<i64>, QueryError> {
    timestamp.map(|t| time(field, t)).transpose()
}

/// A required time.
pub fn required_time(field: &str, timestamp: Option<&prost_types::Timestamp>) -> Result<i64, QueryError> {
    let timestamp = timestamp.ok_or_else(|| QueryError::invalid(field, "is required"))?;
    time(field, timestamp)
}

/// `[start, end)` must not be empty or reversed when both bounds are set.
pub fn range(start: Option<i64>, end: Option<i64>) -> Result<(), QueryError> {
    match (start, end) {
        (Some(start), Some(end)) if end <= start => {
            Err(QueryError::invalid("end", "must be after start (the range is [start, end))"))
        }
        _ => Ok(()),
    }
}

/// Exactly one of `asset_id` and `sensor_id`.
pub fn subject(asset_id: &str, sensor_id: &str) -> Result<Subject, QueryError> {
    match (asset_id.is_empty(), sensor_id.is_empty()) {
        (false, true) => Ok(Subject::Asset(asset_id.to_owned())),
        (true, false) => Ok(Subject::Sensor(sensor_id.to_owned())),
        (true, true) => Err(QueryError::invalid("asset_id", "set asset_id or sensor_id (exactly one)")),
        (false, false) => Err(QueryError::invalid("sensor_id", "set either asset_id or sensor_id, not both")),
    }
}

/// A bucket width in microseconds: at least 1 s, whole microseconds (PostgreSQL's resolution).
pub fn bucket_width(duration: Option<&prost_types::Duration>) -> Result<i64, QueryError> {
    const FIELD: &str = "bucket_width";
    let duration = duration.ok_or_else(|| QueryError::invalid(FIELD, "is required (e.g. \"60s\")"))?;
    let (seconds, nanos) = (duration.seconds, duration.nanos);
    if nanos.abs() >= 1_000_000_000 || (seconds > 0 && nanos < 0) || (seconds < 0 && nanos > 0) {
        return Err(QueryError::invalid(FIELD, "is not a normalised google.protobuf.Duration"));
    }
    if nanos % 1000 != 0 {
        return Err(QueryError::invalid(FIELD, "must be a whole number of microseconds"));
    }
    let micros = seconds
        .checked_mul(1_000_000)
        .and_then(|m| m.checked_add(i64::from(nanos / 1000)))
        .ok_or_else(|| QueryError::invalid(FIELD, "is too large"))?;
    if micros < MIN_BUCKET_WIDTH_MICROS {
        return Err(QueryError::invalid(FIELD, "must be at least 1s"));
    }
    Ok(micros)
}

/// Buckets of `width` in `[start, end)` (the last one may be partial); at most [`MAX_BUCKETS`].
pub fn bucket_count(start: i64, end: i64, width: i64) -> Result<i64, QueryError> {
    // start and end are within 0001..9999, so end - start cannot overflow.
    let count = div_ceil(end - start, width);
    if count > MAX_BUCKETS {
        return Err(QueryError::invalid(
            "bucket_width",
            format!(
                "gives {count} buckets between start and end, more than {MAX_BUCKETS}; use a width of at least {}s or a shorter range",
                div_ceil(div_ceil(end - start, MAX_BUCKETS), 1_000_000)
            ),
        ));
    }
    Ok(count)
}

/// Microseconds since the Unix epoch as RFC 3339 in UTC (`2025-11-24T16:00:00.000001Z`), for
/// error messages: a person reads them, and a microsecond count means nothing to one. Days to
/// a civil date with Howard Hinnant's `civil_from_days` (proleptic Gregorian calendar).
pub fn display_time(micros: i64) -> String {
    let seconds = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000);
    let (days, second_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // March = 0
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let (hour, minute, second) = (second_of_day / 3600, second_of_day / 60 % 60, second_of_day % 60);
    let fraction = if fraction == 0 { String::new() } else { format!(".{fraction:06}") };
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{fraction}Z")
}

/// `ceil(a / b)` for `a >= 0`, `b > 0` (`i64::div_ceil` is not stable for signed integers).
fn div_ceil(a: i64, b: i64) -> i64 {
    debug_assert!(a >= 0 && b > 0, "div_ceil({a}, {b})");
    (a as u64).div_ceil(b as u64) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn ts(seconds: i64, nanos: i32) -> prost_types::Timestamp {
        prost_types::Timestamp { seconds, nanos }
    }

    fn dur(seconds: i64, nanos: i32) -> prost_types::Duration {
        prost_types::Duration { seconds, nanos }
    }

    fn message(error: QueryError) -> String {
        let status = tonic::Status::from(error);
        assert_eq!(status.code(), Code::InvalidArgument);
        status.message().to_owned()
    }

    #[test]
    fn page_size_zero_is_the_default_and_above_max_is_refused() {
        let settings = QuerySettings::default();
        assert_eq!(page_size(0, &settings).unwrap(), 100);
        assert_eq!(page_size(1, &settings).unwrap(), 1);
        assert_eq!(page_size(1000, &settings).unwrap(), 1000);
        assert!(message(page_size(1001, &settings).unwrap_err()).starts_with("page_size: 1001 is above the maximum"));
        assert!(message(page_size(-1, &settings).unwrap_err()).starts_with("page_size: -1 is negative"));
    }

    #[test]
    fn times_display_as_rfc3339_in_utc() {
        assert_eq!(display_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(display_time(1_764_000_000_000_000), "2025-11-24T16:00:00Z");
        assert_eq!(display_time(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(display_time(951_782_400_000_001), "2000-02-29T00:00:00.000001Z");
        assert_eq!(display_time(MIN_SECONDS * 1_000_000), "0001-01-01T00:00:00Z");
        assert_eq!(display_time(MAX_SECONDS * 1_000_000), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn times_round_up_to_the_microsecond() {
        assert_eq!(time("start", &ts(1, 0)).unwrap(), 1_000_000);
        assert_eq!(time("start", &ts(1, 1)).unwrap(), 1_000_001);
        assert_eq!(time("start", &ts(1, 1000)).unwrap(), 1_000_001);
        assert_eq!(time("start", &ts(1, 999_999_999)).unwrap(), 2_000_000);
        assert_eq!(time("start", &ts(-1, 500)).unwrap(), -999_999);
    }

    #[test]
    fn times_outside_the_protobuf_range_or_denormalised_are_refused() {
        assert!(message(time("end", &ts(MAX_SECONDS + 1, 0)).unwrap_err()).starts_with("end: must be between"));
        assert!(time("end", &ts(MAX_SECONDS, 999_999_999)).is_ok());
        assert!(time("start", &ts(MIN_SECONDS, 0)).is_ok());
        assert!(message(time("start", &ts(0, -1)).unwrap_err()).starts_with("start: nanos -1"));
        assert!(message(required_time("start", None).unwrap_err()).starts_with("start: is required"));
        assert_eq!(optional_time("start", None).unwrap(), None);
    }

    #[test]
    fn ranges_must_not_be_empty_or_reversed() {
        assert!(range(Some(1), Some(2)).is_ok());
        assert!(range(None, Some(2)).is_ok());
        assert!(range(Some(2), None).is_ok());
        assert!(message(range(Some(2), Some(2)).unwrap_err()).starts_with("end: must be after start"));
        assert!(range(Some(3), Some(2)).is_err());
    }

    #[test]
    fn exactly_one_subject() {
        assert_eq!(subject("a", "").unwrap(), Subject::Asset("a".into()));
        assert_eq!(subject("", "s").unwrap(), Subject::Sensor("s".into()));
        assert!(message(subject("a", "s").unwrap_err()).contains("not both"));
        assert!(message(subject("", "").unwrap_err()).contains("exactly one"));
    }

    #[test]
    fn bucket_widths_are_whole_microseconds_of_at_least_a_second() {
        assert_eq!(bucket_width(Some(&dur(1, 0))).unwrap(), 1_000_000);
        assert_eq!(bucket_width(Some(&dur(1, 500_000_000))).unwrap(), 1_500_000);
        assert_eq!(bucket_width(Some(&dur(3600, 0))).unwrap(), 3_600_000_000);
        assert!(message(bucket_width(Some(&dur(0, 999_999_000))).unwrap_err()).contains("at least 1s"));
        assert!(message(bucket_width(Some(&dur(1, 1))).unwrap_err()).contains("whole number of microseconds"));
        assert!(message(bucket_width(Some(&dur(-5, 0))).unwrap_err()).contains("at least 1s"));
        assert!(message(bucket_width(Some(&dur(1, -1000))).unwrap_err()).contains("normalised"));
        assert!(message(bucket_width(Some(&dur(i64::MAX, 0))).unwrap_err()).contains("too large"));
        assert!(message(bucket_width(None).unwrap_err()).starts_with("bucket_width: is required"));
    }

    #[test]
    fn at_most_ten_thousand_buckets_and_the_error_says_which_width_fits() {
        let hour = 3_600_000_000;
        assert_eq!(bucket_count(0, 10_000 * hour, hour).unwrap(), 10_000);
        assert_eq!(bucket_count(0, hour + 1, hour).unwrap(), 2);
        let error = message(bucket_count(0, 10_000 * hour + 1, hour).unwrap_err());
        assert!(error.contains("10001 buckets") && error.contains("at least 3601s"), "{error}");
    }
}
