//! RFC 3339 timestamps (`2025-11-20T10:15:30.250Z`, `2025-11-20 11:15:30+01:00`) to and from
//! event time, for `smctl ingest-file` and the model registry. Written by hand because this is all smctl needs of a
//! date library: the proleptic Gregorian calendar in UTC, with numeric offsets.
//!
//! Not supported on purpose: time zone names, week dates, and anything before year 0000 or
//! after 9999 (RFC 3339 has four-digit years).

use crate::Timestamp;

const MICROS_PER_SEC: i64 = 1_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// Parses an RFC 3339 date-time with an offset (`Z` or `±HH:MM`). `T`, `t` or a space may
/// separate date and time; fractions beyond microseconds are truncated. A leap second
/// (`:60`) is read as the first instant of the next minute. The error says what is wrong.
pub fn parse(text: &str) -> Result<Timestamp, &'static str> {
    let b = text.as_bytes();
    if b.len() < 19 {
        return Err("too short for YYYY-MM-DDTHH:MM:SSZ");
    }
    let digits = |from: usize, to: usize| -> Result<i64, &'static str> {
        let part = &b[from..to];
        if !part.iter().all(u8::is_ascii_digit) {
            return Err("expected digits in YYYY-MM-DDTHH:MM:SS");
        }
        Ok(part.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    if b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return Err("expected YYYY-MM-DDTHH:MM:SS");
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return Err("date and time must be separated by T");
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 7)?, digits(8, 10)?);
    let (hour, minute, second) = (digits(11, 13)?, digits(14, 16)?, digits(17, 19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err("no such date");
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err("no such time of day");
    }
    let mut rest = &b[19..];
    let mut micros = 0;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let len = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 {
            return Err("a '.' must be followed by digits");
        }
        // The first six digits are microseconds; pad shorter fractions (".25" = 250000 µs).
        micros = fraction[..len.min(6)].iter().fold(0, |n, d| n * 10 + i64::from(d - b'0'));
        micros *= 10_i64.pow(6 - len.min(6) as u32);
        rest = &fraction[len..];
    }
    let offset_secs = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let two = |a: u8, b: u8| -> Result<i64, &'static str> {
                if a.is_ascii_digit() && b.is_ascii_digit() {
                    Ok(i64::from(a - b'0') * 10 + i64::from(b - b'0'))
                } else {
                    Err("offset must be Z or ±HH:MM")
                }
            };
            let (hours, minutes) = (two(*h1, *h2)?, two(*m1, *m2)?);
            if hours > 23 || minutes > 59 {
                return Err("offset must be Z or ±HH:MM");
            }
            let secs = hours * 3_600 + minutes * 60;
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return Err("missing or invalid offset: end with Z or ±HH:MM"),
    };
    let secs = days_from_civil(year, month, day) * SECS_PER_DAY + hour * 3_600 + minute * 60 + second - offset_secs;
    Ok(Timestamp(secs * MICROS_PER_SEC + micros))
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, for summaries.
pub fn format(timestamp: Timestamp) -> String {
    let micros = timestamp.as_micros();
    let secs = micros.div_euclid(MICROS_PER_SEC);
    let (days, of_day) = (secs.div_euclid(SECS_PER_DAY), secs.rem_euclid(SECS_PER_DAY));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        of_day / 3_600,
        of_day / 60 % 60,
        of_day % 60,
        micros.rem_euclid(MICROS_PER_SEC)
    )
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(text: &str) -> i64 {
        parse(text).unwrap().as_micros()
    }

    #[test]
    fn parses_utc_and_offsets_to_the_same_instant() {
        assert_eq!(micros("1970-01-01T00:00:00Z"), 0);
        assert_eq!(micros("2023-11-14T22:13:20Z"), 1_700_000_000 * MICROS_PER_SEC);
        assert_eq!(micros("2023-11-14T23:13:20+01:00"), 1_700_000_000 * MICROS_PER_SEC);
        assert_eq!(micros("2023-11-14T17:43:20-04:30"), 1_700_000_000 * MICROS_PER_SEC);
        assert_eq!(micros("2023-11-14 22:13:20z"), 1_700_000_000 * MICROS_PER_SEC);
        assert_eq!(micros("1969-12-31T23:59:59Z"), -MICROS_PER_SEC);
    }

    #[test]
    fn fractions_are_microseconds_truncated_or_padded() {
        assert_eq!(micros("1970-01-01T00:00:00.25Z"), 250_000);
        assert_eq!(micros("1970-01-01T00:00:01.123456Z"), 1_123_456);
        assert_eq!(micros("1970-01-01T00:00:01.123456789Z"), 1_123_456);
    }

    #[test]
    fn handles_leap_years_and_leap_seconds() {
        assert_eq!(micros("2024-02-29T00:00:00Z") - micros("2024-02-28T00:00:00Z"), SECS_PER_DAY * MICROS_PER_SEC);
        assert_eq!(micros("2024-03-01T00:00:00Z") - micros("2024-02-29T00:00:00Z"), SECS_PER_DAY * MICROS_PER_SEC);
        assert!(parse("2023-02-29T00:00:00Z").is_err());
        assert!(parse("1900-02-29T00:00:00Z").is_err());
        parse("2000-02-29T00:00:00Z").unwrap();
        assert_eq!(micros("2016-12-31T23:59:60Z"), micros("2017-01-01T00:00:00Z"));
    }

    #[test]
    fn rejects_what_is_not_rfc_3339_saying_why() {
        for (text, why) in [
            ("2025-11-20", "too short"),
            ("2025-11-20T10:00:00", "offset"),
            ("2025-11-20T10:00:00+0100", "offset"),
            ("2025-13-01T00:00:00Z", "date"),
            ("2025-11-20T24:00:00Z", "time"),
            ("2025/11/20T10:00:00Z", "YYYY"),
            ("2025-11-20X10:00:00Z", "separated"),
            ("2025-11-20T10:00:00.Z", "digits"),
            ("２０２５-11-20T10:00:00Z", "YYYY"),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(why), "{text}: {error}");
        }
    }

    #[test]
    fn format_and_parse_round_trip() {
        for micros in [0, 1, -1, 1_700_000_000_123_456, 951_782_400_000_000, -86_400_000_001, 253_402_300_799_999_999] {
            let text = format(Timestamp(micros));
            assert_eq!(parse(&text).unwrap(), Timestamp(micros), "{text}");
        }
        assert_eq!(format(Timestamp(1_700_000_000_000_000)), "2023-11-14T22:13:20.000000Z");
    }

    #[test]
    fn civil_days_agree_over_four_centuries() {
        for days in -146_097..=146_097 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            assert!(d >= 1 && d <= days_in_month(y, m));
        }
    }
}
