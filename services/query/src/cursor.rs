//! Page tokens: keyset cursors, opaque to clients.
//!
//! A token holds the position of the last row of a page (for readings: its `occurred_at`,
//! `sensor_id` and `sequence`; for anomalies, drift and predictions: its `occurred_at` and
//! `event_id`; each unique and defining the order) and, except for assets, the filters the page was read with. The next page is "rows after this position", so paging
//! neither skips nor repeats a row when rows are inserted meanwhile, which an offset would.
//! Keeping the filters lets the service refuse a token replayed with other filters, which
//! would otherwise silently page through a different result from a foreign position.
//!
//! Layout (then URL-safe base64 without padding): version byte, kind byte, the fields, and
//! an FNV-1a-64 checksum of all that. The checksum catches a damaged or hand-edited token; it
//! is not a signature, and need not be: a forged token only asks for rows the client may read
//! anyway, with filters it could send itself. The version byte lets a later format be told
//! apart from this one during a rolling upgrade.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sm_domain::{QUOTE_MAX_CHARS, quote};

const VERSION: u8 = 1;
const KIND_READINGS: u8 = 1;
const KIND_ASSETS: u8 = 2;
const KIND_ANOMALIES: u8 = 3;
const KIND_DRIFT: u8 = 4;
const KIND_PREDICTIONS: u8 = 5;
const SUBJECT_ASSET: u8 = 1;
const SUBJECT_SENSOR: u8 = 2;
const CHECKSUM_LEN: usize = 8;

/// Whose readings a request asks for: one asset's (all its sensors) or one sensor's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Asset(String),
    Sensor(String),
}

/// The filters of a `ListReadings` request, as a token remembers them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadingFilter {
    pub subject: Subject,
    /// Inclusive lower bound of event time (µs since the Unix epoch); `None`: unbounded.
    pub start: Option<i64>,
    /// Exclusive upper bound of event time; `None`: unbounded.
    pub end: Option<i64>,
}

/// A row's place in `ListReadings` order: (occurred_at, sensor_id, sequence), descending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadingPosition {
    pub occurred_at: i64,
    pub sensor_id: String,
    pub sequence: i64,
}

/// The filters of a `ListAnomalies` or `ListDrift` request, as a token remembers them. Empty
/// strings and 0 mean "no filter", as in the request (`ListDrift` has no scope or severity).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlertFilter {
    pub asset_id: String,
    pub sensor_id: String,
    pub scope: String,
    pub min_severity: i32,
    /// Inclusive lower bound of event time (µs since the Unix epoch); `None`: unbounded.
    pub from: Option<i64>,
    /// Exclusive upper bound of event time; `None`: unbounded.
    pub to: Option<i64>,
    pub include_backfill: bool,
}

/// A row's place in alert (and prediction) order: (occurred_at, event_id), descending. Event
/// ids are unique, so the order is total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertPosition {
    pub occurred_at: i64,
    pub event_id: String,
}

/// The filters of a `ListPredictions` request, as a token remembers them. An empty
/// `asset_id` means every asset.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PredictionFilter {
    pub asset_id: String,
    /// Inclusive lower bound of `occurred_at` (µs since the Unix epoch); `None`: unbounded.
    pub from: Option<i64>,
    /// Exclusive upper bound of `occurred_at`; `None`: unbounded.
    pub to: Option<i64>,
}

/// Where the next page starts, and for which request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// `ListReadings`: the next page holds the rows after `after`, under `filter`.
    Readings { filter: ReadingFilter, after: ReadingPosition },
    /// `ListAssets`: the next page holds assets whose id sorts after `after_asset_id`.
    Assets { after_asset_id: String },
    /// `ListAnomalies`: the next page holds the anomalies after `after`, under `filter`.
    Anomalies { filter: AlertFilter, after: AlertPosition },
    /// `ListDrift`: the next page holds the drift events after `after`, under `filter`.
    Drift { filter: AlertFilter, after: AlertPosition },
    /// `ListPredictions`: the next page holds the predictions after `after`, under `filter`.
    Predictions { filter: PredictionFilter, after: AlertPosition },
}

/// Why a page token was refused. Each message tells the client what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error(
        "is not a page token of this service; pass next_page_token unchanged, or leave it empty for the first page"
    )]
    Undecodable,
    #[error("is damaged or was edited; pass next_page_token unchanged, or leave it empty for the first page")]
    Checksum,
    #[error("has format version {0}, which this server does not read; start again with an empty page_token")]
    Version(u8),
    #[error("was issued by {issued_by}, not {used_with}; leave it empty for the first page")]
    WrongMethod { issued_by: &'static str, used_with: &'static str },
    #[error(
        "was issued for other filters ({issued}); send the same filters as for the first page, or start again with an empty page_token"
    )]
    FilterMismatch { issued: String },
}

impl Cursor {
    /// The method whose responses carry this kind of token (for error messages).
    pub fn method(&self) -> &'static str {
        match self {
            Cursor::Readings { .. } => "ListReadings",
            Cursor::Assets { .. } => "ListAssets",
            Cursor::Anomalies { .. } => "ListAnomalies",
            Cursor::Drift { .. } => "ListDrift",
            Cursor::Predictions { .. } => "ListPredictions",
        }
    }

    /// The opaque token text.
    pub fn encode(&self) -> String {
        let mut bytes = vec![VERSION];
        match self {
            Cursor::Readings { filter, after } => {
                bytes.push(KIND_READINGS);
                let (tag, id) = match &filter.subject {
                    Subject::Asset(id) => (SUBJECT_ASSET, id),
                    Subject::Sensor(id) => (SUBJECT_SENSOR, id),
                };
                bytes.push(tag);
                put_str(&mut bytes, id);
                put_opt_i64(&mut bytes, filter.start);
                put_opt_i64(&mut bytes, filter.end);
                bytes.extend_from_slice(&after.occurred_at.to_be_bytes());
                put_str(&mut bytes, &after.sensor_id);
                bytes.extend_from_slice(&after.sequence.to_be_bytes());
            }
            Cursor::Assets { after_asset_id } => {
                bytes.push(KIND_ASSETS);
                put_str(&mut bytes, after_asset_id);
            }
            Cursor::Anomalies { filter, after } => {
                bytes.push(KIND_ANOMALIES);
                put_alert(&mut bytes, filter, after);
            }
            Cursor::Drift { filter, after } => {
                bytes.push(KIND_DRIFT);
                put_alert(&mut bytes, filter, after);
            }
            Cursor::Predictions { filter, after } => {
                bytes.push(KIND_PREDICTIONS);
                put_str(&mut bytes, &filter.asset_id);
                put_opt_i64(&mut bytes, filter.from);
                put_opt_i64(&mut bytes, filter.to);
                bytes.extend_from_slice(&after.occurred_at.to_be_bytes());
                put_str(&mut bytes, &after.event_id);
            }
        }
        let checksum = fnv1a64(&bytes);
        bytes.extend_from_slice(&checksum.to_be_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Reads a token made by [`Cursor::encode`].
    pub fn decode(token: &str) -> Result<Self, CursorError> {
        let bytes = URL_SAFE_NO_PAD.decode(token.trim()).map_err(|_| CursorError::Undecodable)?;
        if bytes.len() < 2 + CHECKSUM_LEN {
            return Err(CursorError::Undecodable);
        }
        let (body, checksum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if fnv1a64(body).to_be_bytes() != checksum {
            return Err(CursorError::Checksum);
        }
        if body[0] != VERSION {
            return Err(CursorError::Version(body[0]));
        }
        let mut reader = Reader { bytes: &body[2..] };
        let cursor = match body[1] {
            KIND_READINGS => {
                let subject = match reader.u8()? {
                    SUBJECT_ASSET => Subject::Asset(reader.str()?),
                    SUBJECT_SENSOR => Subject::Sensor(reader.str()?),
                    _ => return Err(CursorError::Undecodable),
                };
                let filter = ReadingFilter { subject, start: reader.opt_i64()?, end: reader.opt_i64()? };
                let after =
                    ReadingPosition { occurred_at: reader.i64()?, sensor_id: reader.str()?, sequence: reader.i64()? };
                Cursor::Readings { filter, after }
            }
            KIND_ASSETS => Cursor::Assets { after_asset_id: reader.str()? },
            KIND_ANOMALIES => {
                let (filter, after) = reader.alert()?;
                Cursor::Anomalies { filter, after }
            }
            KIND_DRIFT => {
                let (filter, after) = reader.alert()?;
                Cursor::Drift { filter, after }
            }
            KIND_PREDICTIONS => {
                let filter =
                    PredictionFilter { asset_id: reader.str()?, from: reader.opt_i64()?, to: reader.opt_i64()? };
                let after = AlertPosition { occurred_at: reader.i64()?, event_id: reader.str()? };
                Cursor::Predictions { filter, after }
            }
            _ => return Err(CursorError::Undecodable),
        };
        // A valid checksum over bytes we do not fully understand is not a token of ours.
        if !reader.bytes.is_empty() {
            return Err(CursorError::Undecodable);
        }
        Ok(cursor)
    }
}

impl std::fmt::Display for ReadingFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.subject {
            Subject::Asset(id) => write!(f, "asset_id={}", quote(id, QUOTE_MAX_CHARS))?,
            Subject::Sensor(id) => write!(f, "sensor_id={}", quote(id, QUOTE_MAX_CHARS))?,
        }
        let bound = |b: Option<i64>| b.map_or_else(|| "unset".to_owned(), |micros| format!("{micros}µs"));
        write!(f, ", start={}, end={}", bound(self.start), bound(self.end))
    }
}

impl std::fmt::Display for AlertFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bound = |b: Option<i64>| b.map_or_else(|| "unset".to_owned(), |micros| format!("{micros}µs"));
        write!(
            f,
            "asset_id={}, sensor_id={}, scope={}, min_severity={}, from={}, to={}, include_backfill={}",
            quote(&self.asset_id, QUOTE_MAX_CHARS),
            quote(&self.sensor_id, QUOTE_MAX_CHARS),
            quote(&self.scope, QUOTE_MAX_CHARS),
            self.min_severity,
            bound(self.from),
            bound(self.to),
            self.include_backfill
        )
    }
}

impl std::fmt::Display for PredictionFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bound = |b: Option<i64>| b.map_or_else(|| "unset".to_owned(), |micros| format!("{micros}µs"));
        write!(
            f,
            "asset_id={}, from={}, to={}",
            quote(&self.asset_id, QUOTE_MAX_CHARS),
            bound(self.from),
            bound(self.to)
        )
    }
}

fn put_alert(bytes: &mut Vec<u8>, filter: &AlertFilter, after: &AlertPosition) {
    put_str(bytes, &filter.asset_id);
    put_str(bytes, &filter.sensor_id);
    put_str(bytes, &filter.scope);
    bytes.extend_from_slice(&filter.min_severity.to_be_bytes());
    put_opt_i64(bytes, filter.from);
    put_opt_i64(bytes, filter.to);
    bytes.push(u8::from(filter.include_backfill));
    bytes.extend_from_slice(&after.occurred_at.to_be_bytes());
    put_str(bytes, &after.event_id);
}

fn put_str(bytes: &mut Vec<u8>, text: &str) {
    // Ids come from requests that tonic caps at 4 MiB, so the length always fits.
    bytes.extend_from_slice(&(text.len() as u32).to_be_bytes());
    bytes.extend_from_slice(text.as_bytes());
}

fn put_opt_i64(bytes: &mut Vec<u8>, value: Option<i64>) {
    match value {
        None => bytes.push(0),
        Some(value) => {
            bytes.push(1);
            bytes.extend_from_slice(&value.to_be_bytes());
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], CursorError> {
        if self.bytes.len() < n {
            return Err(CursorError::Undecodable);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, CursorError> {
        Ok(self.take(1)?[0])
    }

    fn i64(&mut self) -> Result<i64, CursorError> {
        let raw: [u8; 8] = self.take(8)?.try_into().map_err(|_| CursorError::Undecodable)?;
        Ok(i64::from_be_bytes(raw))
    }

    fn opt_i64(&mut self) -> Result<Option<i64>, CursorError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.i64().map(Some),
            _ => Err(CursorError::Undecodable),
        }
    }

    fn i32(&mut self) -> Result<i32, CursorError> {
        let raw: [u8; 4] = self.take(4)?.try_into().map_err(|_| CursorError::Undecodable)?;
        Ok(i32::from_be_bytes(raw))
    }

    fn bool(&mut self) -> Result<bool, CursorError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(CursorError::Undecodable),
        }
    }

    /// The fields [`put_alert`] wrote, in its order.
    fn alert(&mut self) -> Result<(AlertFilter, AlertPosition), CursorError> {
        let filter = AlertFilter {
            asset_id: self.str()?,
            sensor_id: self.str()?,
            scope: self.str()?,
            min_severity: self.i32()?,
            from: self.opt_i64()?,
            to: self.opt_i64()?,
            include_backfill: self.bool()?,
        };
        let after = AlertPosition { occurred_at: self.i64()?, event_id: self.str()? };
        Ok((filter, after))
    }

    fn str(&mut self) -> Result<String, CursorError> {
        let raw: [u8; 4] = self.take(4)?.try_into().map_err(|_| CursorError::Undecodable)?;
        let len = u32::from_be_bytes(raw) as usize;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| CursorError::Undecodable)
    }
}

/// FNV-1a, 64 bits: tiny, and stable across Rust versions and machines (unlike
/// `DefaultHasher`), so every instance of the service agrees on a token.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readings_cursor() -> Cursor {
        Cursor::Readings {
            filter: ReadingFilter {
                subject: Subject::Asset("pump-7".into()),
                start: Some(-5),
                end: Some(1_764_000_000_000_000),
            },
            after: ReadingPosition {
                occurred_at: 1_763_999_000_000_001,
                sensor_id: "pump-7.temp".into(),
                sequence: 42,
            },
        }
    }

    #[test]
    fn tokens_round_trip() {
        let cursors = [
            readings_cursor(),
            Cursor::Readings {
                filter: ReadingFilter { subject: Subject::Sensor("s-ü".into()), start: None, end: None },
                after: ReadingPosition { occurred_at: i64::MIN, sensor_id: String::new(), sequence: -1 },
            },
            Cursor::Assets { after_asset_id: "asset-0099".into() },
            Cursor::Assets { after_asset_id: String::new() },
            Cursor::Anomalies {
                filter: AlertFilter {
                    asset_id: "pump-7".into(),
                    sensor_id: String::new(),
                    scope: "sensor".into(),
                    min_severity: 3,
                    from: Some(-1),
                    to: None,
                    include_backfill: true,
                },
                after: AlertPosition { occurred_at: 1_764_000_000_000_000, event_id: "0194-ab".into() },
            },
            Cursor::Drift {
                filter: AlertFilter::default(),
                after: AlertPosition { occurred_at: i64::MIN, event_id: String::new() },
            },
            Cursor::Predictions {
                filter: PredictionFilter { asset_id: "pump-7".into(), from: Some(5), to: Some(1_764_000_000_000_000) },
                after: AlertPosition { occurred_at: 1_763_000_000_000_000, event_id: "0194-cd".into() },
            },
            Cursor::Predictions {
                filter: PredictionFilter::default(),
                after: AlertPosition { occurred_at: -1, event_id: String::new() },
            },
        ];
        for cursor in cursors {
            let token = cursor.encode();
            assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{token}");
            assert_eq!(Cursor::decode(&token), Ok(cursor));
        }
    }

    #[test]
    fn fnv1a_matches_the_reference_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn every_single_character_edit_is_refused() {
        let token = readings_cursor().encode();
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for position in 0..token.len() {
            for replacement in alphabet.chars().filter(|c| *c != token.as_bytes()[position] as char) {
                let mut edited = token.clone();
                edited.replace_range(position..=position, &replacement.to_string());
                // Editing the last character may only change padding bits that decode to the
                // same bytes; anything that decodes must then be the very same cursor.
                match Cursor::decode(&edited) {
                    Err(_) => {}
                    Ok(cursor) => assert_eq!(cursor, readings_cursor(), "edit at {position} accepted"),
                }
            }
        }
    }

    #[test]
    fn garbage_truncation_and_other_versions_are_refused() {
        assert_eq!(Cursor::decode("not a token!"), Err(CursorError::Undecodable));
        assert_eq!(Cursor::decode(""), Err(CursorError::Undecodable));
        let token = readings_cursor().encode();
        assert!(Cursor::decode(&token[..token.len() - 4]).is_err());
        let mut body = vec![2, KIND_ASSETS, 0, 0, 0, 0];
        body.extend_from_slice(&fnv1a64(&body.clone()).to_be_bytes());
        assert_eq!(Cursor::decode(&URL_SAFE_NO_PAD.encode(body)), Err(CursorError::Version(2)));
    }

    #[test]
    fn trailing_bytes_under_a_valid_checksum_are_refused() {
        let mut body = vec![VERSION, KIND_ASSETS];
        put_str(&mut body, "a");
        body.push(0);
        body.extend_from_slice(&fnv1a64(&body.clone()).to_be_bytes());
        assert_eq!(Cursor::decode(&URL_SAFE_NO_PAD.encode(body)), Err(CursorError::Undecodable));
    }

    #[test]
    fn filters_print_readably_for_error_messages() {
        let Cursor::Readings { filter, .. } = readings_cursor() else { unreachable!() };
        assert_eq!(filter.to_string(), "asset_id=\"pump-7\", start=-5µs, end=1764000000000000µs");
        let filter = PredictionFilter { asset_id: String::new(), from: Some(3), to: None };
        assert_eq!(filter.to_string(), "asset_id=\"\", from=3µs, to=unset");
    }

    #[test]
    fn filters_quote_long_ids_short() {
        let filter = PredictionFilter { asset_id: "p".repeat(100_000), from: None, to: None };
        let text = filter.to_string();
        assert!(text.len() < 200 && text.contains("99936 bytes cut"), "{text}");
        let filter =
            AlertFilter { sensor_id: "s".repeat(100_000), scope: "q".repeat(100_000), ..AlertFilter::default() };
        let text = CursorError::FilterMismatch { issued: filter.to_string() }.to_string();
        assert!(text.len() < 500 && text.matches("99936 bytes cut").count() == 2, "{text}");
    }
}
