//! `smctl ingest-file FILE`: bulk import of historical readings into `sm.readings.raw.v1`,
//! marked `backfill=true` so they are stored and analysed but never raise live alarms.
//!
//! Two formats, chosen by extension (`.csv`; `.jsonl`, `.ndjson`, `.json`) or `--format`:
//! - CSV with the header `timestamp,asset_id,sensor_id,value,unit[,sequence]`; `timestamp` is
//!   RFC 3339 or epoch milliseconds. Fields are split on commas and trimmed; a field may be
//!   wrapped in double quotes, but quoted commas are not supported (ids and units have none);
//! - JSON lines in the gateway form (`{"asset_id", "sensor_id", "timestamp_ms", "value",
//!   "unit", ...}`, one object per line), parsed by sm-domain's own gateway parser.
//!
//! A line that cannot be parsed is reported on stderr with its line number and skipped; the
//! count is in the summary. Blank lines are ignored. Registry checks (known sensor, unit,
//! range) are ingestion's: what passes here can still be dead-lettered there, with a reason.
//! The file is streamed, never loaded whole.

use crate::publish::{Publisher, reading_headers};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use sm_domain::rfc3339;
use sm_domain::{AssetId, Codec, DomainEvent, Envelope, SensorId, SensorReading, TenantId, Timestamp, topics};
use sm_kafka::KafkaConfig;
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `smctl ingest-file`.
#[derive(Debug, clap::Args)]
pub struct IngestFileArgs {
    /// CSV (`timestamp,asset_id,sensor_id,value,unit[,sequence]`) or JSON lines (gateway form).
    pub file: PathBuf,
    /// File format; default: from the extension (.csv, .jsonl/.ndjson/.json).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Tenant of the readings. CSV default: `default`; JSON lines keep their own `tenant_id`
    /// unless this is given.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Parse and report without publishing.
    #[arg(long)]
    pub dry_run: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Input file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Jsonl,
}

impl Format {
    fn from_extension(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "jsonl" | "ndjson" | "json" => Some(Format::Jsonl),
            _ => None,
        }
    }
}

/// `producer` of imported readings.
const PRODUCER: &str = "smctl-ingest-file";
/// Longest wait for outstanding acknowledgements at the end.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(120);

/// One reading parsed from a line, before it becomes an event.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoricalReading {
    /// From the line (JSON lines); `None` for CSV, which has no tenant column.
    pub tenant: Option<TenantId>,
    pub asset_id: AssetId,
    pub sensor_id: SensorId,
    pub occurred_at: Timestamp,
    pub value: f64,
    pub unit: String,
    pub sequence: i64,
}

/// Why a line was skipped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LineError {
    #[error("header must be `timestamp,asset_id,sensor_id,value,unit` or `...,unit,sequence`, found `{0}`")]
    BadHeader(String),
    #[error("expected {expected} comma-separated fields, found {found}")]
    FieldCount { expected: usize, found: usize },
    #[error("{0} is empty")]
    EmptyField(&'static str),
    #[error("timestamp `{text}` is neither RFC 3339 nor epoch milliseconds: {problem}")]
    BadTimestamp { text: String, problem: &'static str },
    #[error("value `{0}` is not a number")]
    BadValue(String),
    #[error("value `{0}` is not finite")]
    NonFiniteValue(String),
    #[error("sequence `{0}` is not an integer")]
    BadSequence(String),
    #[error("not a gateway JSON reading: {0}")]
    Json(String),
    #[error("line is not UTF-8")]
    NotUtf8,
}

/// The columns a CSV header declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvColumns {
    pub with_sequence: bool,
}

const CSV_COLUMNS: [&str; 5] = ["timestamp", "asset_id", "sensor_id", "value", "unit"];

/// Checks the header line (case-insensitive; a UTF-8 byte-order mark is ignored).
pub fn parse_csv_header(line: &str) -> Result<CsvColumns, LineError> {
    let fields: Vec<String> =
        split_csv(line.trim_start_matches('\u{feff}')).iter().map(|f| f.to_ascii_lowercase()).collect();
    if fields[..] == CSV_COLUMNS {
        Ok(CsvColumns { with_sequence: false })
    } else if fields.len() == 6 && fields[..5] == CSV_COLUMNS && fields[5] == "sequence" {
        Ok(CsvColumns { with_sequence: true })
    } else {
        Err(LineError::BadHeader(line.trim().to_owned()))
    }
}

/// Parses one CSV data line. Without a sequence column the sequence is 0, as for gateways
/// that send none: the timestamp alone then tells readings of a sensor apart.
pub fn parse_csv_line(line: &str, columns: CsvColumns) -> Result<HistoricalReading, LineError> {
    let fields = split_csv(line);
    let expected = if columns.with_sequence { 6 } else { 5 };
    if fields.len() != expected {
        return Err(LineError::FieldCount { expected, found: fields.len() });
    }
    let sequence = match fields.get(5) {
        Some(text) => text.parse::<i64>().map_err(|_| LineError::BadSequence((*text).to_owned()))?,
        None => 0,
    };
    let value = fields[3].parse::<f64>().map_err(|_| LineError::BadValue(fields[3].to_owned()))?;
    let reading = HistoricalReading {
        tenant: None,
        asset_id: AssetId::from(fields[1]),
        sensor_id: SensorId::from(fields[2]),
        occurred_at: parse_timestamp(fields[0])?,
        value,
        unit: fields[4].to_owned(),
        sequence,
    };
    check(reading)
}

/// Parses one JSON line in the gateway form, with sm-domain's gateway parser (the one the
/// runtime uses for JSON records), so the two cannot disagree on the format.
pub fn parse_json_line(line: &str) -> Result<HistoricalReading, LineError> {
    let event: Envelope<SensorReading> = SensorReading::from_json(line.as_bytes())
        .unwrap_or_else(|| Err("SensorReading has no JSON form".to_owned()))
        .map_err(LineError::Json)?;
    check(HistoricalReading {
        tenant: Some(event.header.tenant_id),
        asset_id: event.header.asset_id,
        sensor_id: event.payload.sensor_id,
        occurred_at: event.header.occurred_at,
        value: event.payload.value,
        unit: event.payload.unit,
        sequence: event.payload.sequence,
    })
}

/// What ingestion would dead-letter for sure is refused here, where the line number is known.
fn check(reading: HistoricalReading) -> Result<HistoricalReading, LineError> {
    if reading.asset_id.as_str().is_empty() {
        return Err(LineError::EmptyField("asset_id"));
    }
    if reading.sensor_id.as_str().is_empty() {
        return Err(LineError::EmptyField("sensor_id"));
    }
    if reading.unit.is_empty() {
        return Err(LineError::EmptyField("unit"));
    }
    if !reading.value.is_finite() {
        return Err(LineError::NonFiniteValue(reading.value.to_string()));
    }
    Ok(reading)
}

/// RFC 3339 (`2025-11-20T10:00:00Z`, `...+01:00`) or integer milliseconds since the epoch.
pub fn parse_timestamp(text: &str) -> Result<Timestamp, LineError> {
    let bad = |problem| LineError::BadTimestamp { text: text.to_owned(), problem };
    if text.is_empty() {
        return Err(LineError::EmptyField("timestamp"));
    }
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<i64>().map(Timestamp::from_millis).map_err(|_| bad("milliseconds out of range"));
    }
    rfc3339::parse(text).map_err(bad)
}

/// Comma-separated fields, trimmed, with one level of surrounding double quotes removed.
fn split_csv(line: &str) -> Vec<&str> {
    line.split(',')
        .map(|field| {
            let field = field.trim();
            field.strip_prefix('"').and_then(|f| f.strip_suffix('"')).unwrap_or(field)
        })
        .collect()
}

/// What an import did.
#[derive(Debug, Default)]
struct Report {
    lines: u64,
    bytes: u64,
    readings: u64,
    invalid: u64,
    earliest: Option<Timestamp>,
    latest: Option<Timestamp>,
}

pub async fn run(config: &KafkaConfig, args: IngestFileArgs) -> anyhow::Result<()> {
    let format = args.format.or_else(|| Format::from_extension(&args.file)).with_context(|| {
        format!("cannot tell the format of {} from its extension: pass --format csv or jsonl", args.file.display())
    })?;
    let file = File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
    let size = file.metadata().with_context(|| format!("reading {}", args.file.display()))?.len();
    let publisher = if args.dry_run {
        None
    } else {
        sm_kafka::ensure_topics(config, topics::ALL).await.context("creating topics")?;
        Some(Publisher::new(config).context("creating the producer")?)
    };
    let codec = Codec::embedded().context("loading schemas")?;
    let progress = progress_bar(size, !args.quiet && std::io::stdout().is_terminal())?;
    let started = Instant::now();
    let path = args.file.clone();
    let tenant = args.tenant.clone();
    // Reading a file blocks; so does waiting on a full producer queue. Neither belongs on the
    // async runtime's threads.
    let (report, publisher) = tokio::task::spawn_blocking(move || {
        let report = import(&path, file, format, tenant.as_deref(), &codec, publisher.as_ref(), &progress);
        progress.finish_and_clear();
        report.map(|report| (report, publisher))
    })
    .await
    .context("import task")??;
    if let Some(publisher) = publisher {
        let deliveries =
            tokio::task::spawn_blocking(move || publisher.finish(FLUSH_TIMEOUT)).await.context("flush task")??;
        anyhow::ensure!(
            deliveries.failed == 0,
            "{} of {} readings were not delivered to {}: {}",
            deliveries.failed,
            report.readings,
            topics::READINGS_RAW,
            deliveries.first_error.unwrap_or_default()
        );
    }
    print_report(&report, &args, started.elapsed());
    Ok(())
}

/// Streams `file` line by line, sending each parsed reading (unless `publisher` is `None`).
fn import(
    path: &Path,
    file: File,
    format: Format,
    tenant: Option<&str>,
    codec: &Codec,
    publisher: Option<&Publisher>,
    progress: &ProgressBar,
) -> anyhow::Result<Report> {
    let mut reader = BufReader::new(file);
    let mut report = Report::default();
    let mut columns = None;
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        let read = reader.read_until(b'\n', &mut buffer).with_context(|| format!("reading {}", path.display()))?;
        if read == 0 {
            break;
        }
        report.lines += 1;
        report.bytes += read as u64;
        progress.inc(read as u64);
        let number = report.lines;
        let Ok(line) = std::str::from_utf8(&buffer) else {
            skip(progress, path, number, &LineError::NotUtf8, &mut report);
            continue;
        };
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        let parsed = match (format, columns) {
            (Format::Csv, None) => {
                // The header decides how every other line reads: without it nothing can be
                // imported, so a bad one stops the import instead of skipping every line.
                columns =
                    Some(parse_csv_header(line).with_context(|| format!("{}:{number}: CSV header", path.display()))?);
                continue;
            }
            (Format::Csv, Some(columns)) => parse_csv_line(line, columns),
            (Format::Jsonl, _) => parse_json_line(line),
        };
        match parsed {
            Ok(reading) => {
                let at = reading.occurred_at;
                report.earliest = Some(report.earliest.map_or(at, |earliest| earliest.min(at)));
                report.latest = Some(report.latest.map_or(at, |latest| latest.max(at)));
                if let Some(publisher) = publisher {
                    send(publisher, codec, tenant, reading)
                        .with_context(|| format!("{}:{number}: sending", path.display()))?;
                }
                report.readings += 1;
            }
            Err(error) => skip(progress, path, number, &error, &mut report),
        }
    }
    Ok(report)
}

/// Reports a skipped line on stderr (above the progress bar) and counts it.
fn skip(progress: &ProgressBar, path: &Path, number: u64, error: &LineError, report: &mut Report) {
    report.invalid += 1;
    progress.suspend(|| eprintln!("{}:{number}: {error}; line skipped", path.display()));
}

fn send(publisher: &Publisher, codec: &Codec, tenant: Option<&str>, reading: HistoricalReading) -> anyhow::Result<()> {
    let tenant = match (tenant, reading.tenant) {
        (Some(given), _) => TenantId::from(given),
        (None, Some(own)) => own,
        (None, None) => TenantId::from("default"),
    };
    let key = reading.asset_id.as_str().to_owned();
    let event = Envelope::origin(
        tenant,
        reading.asset_id,
        reading.occurred_at,
        PRODUCER,
        SensorReading {
            sensor_id: reading.sensor_id,
            value: reading.value,
            unit: reading.unit,
            sequence: reading.sequence,
            backfill: true,
        },
    );
    let bytes = codec.encode(&event).context("encoding")?;
    let traceparent = sm_kafka::trace::TraceParent::new_root().header_value();
    publisher.send_blocking(topics::READINGS_RAW, &key, &bytes, reading_headers(&traceparent, false))?;
    Ok(())
}

fn progress_bar(bytes: u64, visible: bool) -> anyhow::Result<ProgressBar> {
    if !visible {
        return Ok(ProgressBar::hidden());
    }
    let style = ProgressStyle::with_template(
        "{spinner} {elapsed_precise} [{wide_bar}] {binary_bytes}/{binary_total_bytes}  {binary_bytes_per_sec}  eta {eta}",
    )
    .context("progress bar template")?
    .progress_chars("=> ");
    Ok(ProgressBar::new(bytes).with_style(style))
}

fn print_report(report: &Report, args: &IngestFileArgs, elapsed: Duration) {
    let action = if args.dry_run { "parsed (not sent: --dry-run)" } else { "sent as backfill to" };
    let target = if args.dry_run { String::new() } else { format!(" {}", topics::READINGS_RAW) };
    println!(
        "{}: {} lines, {} bytes in {:.2} s; {} readings {action}{target} ({:.0} readings/s)",
        args.file.display(),
        report.lines,
        report.bytes,
        elapsed.as_secs_f64(),
        report.readings,
        report.readings as f64 / elapsed.as_secs_f64().max(f64::EPSILON)
    );
    if let (Some(earliest), Some(latest)) = (report.earliest, report.latest) {
        println!("  event time from {} to {}", rfc3339::format(earliest), rfc3339::format(latest));
    }
    if report.invalid > 0 {
        println!("  {} invalid lines skipped (listed above on stderr)", report.invalid);
    } else {
        println!("  no invalid lines");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WITH_SEQUENCE: CsvColumns = CsvColumns { with_sequence: true };
    const WITHOUT_SEQUENCE: CsvColumns = CsvColumns { with_sequence: false };

    #[test]
    fn reads_both_csv_headers_and_refuses_others() {
        assert_eq!(parse_csv_header("timestamp,asset_id,sensor_id,value,unit"), Ok(WITHOUT_SEQUENCE));
        assert_eq!(parse_csv_header("\u{feff}Timestamp, asset_id ,sensor_id,value,unit,sequence\r"), Ok(WITH_SEQUENCE));
        for bad in ["", "timestamp,asset_id,sensor_id,value", "asset_id,timestamp,sensor_id,value,unit", "a,b,c,d,e,f"]
        {
            assert!(matches!(parse_csv_header(bad), Err(LineError::BadHeader(_))), "{bad}");
        }
    }

    #[test]
    fn parses_a_csv_line_with_rfc_3339_time() {
        let reading =
            parse_csv_line("2023-11-14T22:13:20.5Z, pump-001, pump-001.temperature, 71.25, degF, 17", WITH_SEQUENCE)
                .unwrap();
        assert_eq!(
            reading,
            HistoricalReading {
                tenant: None,
                asset_id: "pump-001".into(),
                sensor_id: "pump-001.temperature".into(),
                occurred_at: Timestamp(1_700_000_000_500_000),
                value: 71.25,
                unit: "degF".into(),
                sequence: 17,
            }
        );
    }

    #[test]
    fn parses_a_csv_line_with_epoch_millis_and_quotes() {
        let reading =
            parse_csv_line(r#"1700000000123,"pump-001","pump-001.flow",1800,"L/min""#, WITHOUT_SEQUENCE).unwrap();
        assert_eq!(reading.occurred_at, Timestamp(1_700_000_000_123_000));
        assert_eq!(reading.unit, "L/min");
        assert_eq!(reading.sequence, 0, "no sequence column: 0");
    }

    #[test]
    fn rejects_bad_csv_lines_saying_what_is_wrong() {
        let cases = [
            ("1700000000000,a,a.t,1.0", LineError::FieldCount { expected: 5, found: 4 }),
            ("1700000000000,a,a.t,warm,degC", LineError::BadValue("warm".into())),
            ("1700000000000,a,a.t,NaN,degC", LineError::NonFiniteValue("NaN".into())),
            ("1700000000000,a,a.t,inf,degC", LineError::NonFiniteValue("inf".into())),
            ("1700000000000,,a.t,1,degC", LineError::EmptyField("asset_id")),
            ("1700000000000,a,,1,degC", LineError::EmptyField("sensor_id")),
            ("1700000000000,a,a.t,1,", LineError::EmptyField("unit")),
            (",a,a.t,1,degC", LineError::EmptyField("timestamp")),
        ];
        for (line, expected) in cases {
            assert_eq!(parse_csv_line(line, WITHOUT_SEQUENCE), Err(expected), "{line}");
        }
        assert_eq!(
            parse_csv_line("1700000000000,a,a.t,1,degC,first", WITH_SEQUENCE),
            Err(LineError::BadSequence("first".into()))
        );
        let error = parse_csv_line("yesterday,a,a.t,1,degC", WITHOUT_SEQUENCE).unwrap_err();
        assert!(matches!(&error, LineError::BadTimestamp { text, .. } if text == "yesterday"), "{error}");
        let error = parse_csv_line("2025-11-20T10:00:00,a,a.t,1,degC", WITHOUT_SEQUENCE).unwrap_err();
        assert!(error.to_string().contains("offset"), "{error}");
    }

    #[test]
    fn parses_a_gateway_json_line() {
        let line = r#"{"asset_id":"pump-1","sensor_id":"pump-1.temperature","timestamp_ms":1700000000000,"value":71.5,"unit":"degF","sequence":42,"tenant_id":"acme"}"#;
        let reading = parse_json_line(line).unwrap();
        assert_eq!(reading.tenant, Some(TenantId::from("acme")));
        assert_eq!(reading.occurred_at, Timestamp(1_700_000_000_000_000));
        assert_eq!((reading.value, reading.unit.as_str(), reading.sequence), (71.5, "degF", 42));
        let defaults = parse_json_line(r#"{"asset_id":"a","sensor_id":"a.t","timestamp_ms":1,"value":1,"unit":"A"}"#);
        assert_eq!(defaults.unwrap().tenant, Some(TenantId::from("default")));
    }

    #[test]
    fn rejects_bad_json_lines_naming_the_problem() {
        let error = parse_json_line(r#"{"asset_id":"a","timestamp_ms":1,"value":1,"unit":"A"}"#).unwrap_err();
        assert!(matches!(&error, LineError::Json(detail) if detail.contains("sensor_id")), "{error}");
        assert!(matches!(parse_json_line("{not json"), Err(LineError::Json(_))));
        let error = parse_json_line(r#"{"asset_id":"a","sensor_id":"","timestamp_ms":1,"value":1,"unit":"A"}"#);
        assert_eq!(error, Err(LineError::EmptyField("sensor_id")));
        let error =
            parse_json_line(r#"{"asset_id":"a","sensor_id":"a.t","timestamp_ms":1,"value":1,"unit":"A","colour":1}"#)
                .unwrap_err();
        assert!(error.to_string().contains("colour"), "{error}");
    }

    #[test]
    fn epoch_millis_may_be_negative_but_not_fractional() {
        assert_eq!(parse_timestamp("-1000"), Ok(Timestamp(-1_000_000)));
        assert!(parse_timestamp("1700000000000.5").is_err());
        assert!(parse_timestamp("99999999999999999999").is_err());
    }

    #[test]
    fn format_follows_the_extension() {
        assert_eq!(Format::from_extension(Path::new("history.CSV")), Some(Format::Csv));
        assert_eq!(Format::from_extension(Path::new("a/b.ndjson")), Some(Format::Jsonl));
        assert_eq!(Format::from_extension(Path::new("readings.txt")), None);
        assert_eq!(Format::from_extension(Path::new("readings")), None);
    }

    #[test]
    fn import_skips_and_counts_bad_lines_and_blank_ones() {
        let dir = std::env::temp_dir().join(format!("smctl-ingest-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("history.csv");
        std::fs::write(
            &path,
            b"timestamp,asset_id,sensor_id,value,unit\n\
             2025-11-20T10:00:00Z,pump-001,pump-001.temperature,55.1,degC\r\n\
             \n\
             2025-11-20T10:00:01Z,pump-001,pump-001.temperature,not-a-number,degC\n\
             1763632802000,pump-001,pump-001.temperature,55.3,degC\n\
             \xff\xfe\n",
        )
        .unwrap();
        let codec = Codec::embedded().unwrap();
        let file = File::open(&path).unwrap();
        let report = import(&path, file, Format::Csv, None, &codec, None, &ProgressBar::hidden()).unwrap();
        assert_eq!((report.lines, report.readings, report.invalid), (6, 2, 2));
        assert_eq!(report.earliest, Some(rfc3339::parse("2025-11-20T10:00:00Z").unwrap()));
        assert_eq!(report.latest, Some(Timestamp::from_millis(1_763_632_802_000)));
        std::fs::write(&path, "time,asset,sensor,value,unit\n").unwrap();
        let error = import(&path, File::open(&path).unwrap(), Format::Csv, None, &codec, None, &ProgressBar::hidden())
            .unwrap_err();
        assert!(format!("{error:#}").contains(":1: CSV header"), "{error:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
