//! `sm.v1.ReadingService`: readings history with keyset pagination, bucketed aggregates over
//! raw readings or the rollups, and the latest reading of each sensor.
//!
//! Every query is one statement, so each page or aggregate is read from one consistent
//! snapshot. The tables belong to the projector (`services/projector/src/schema.rs`); this
//! module only reads them and never assumes more than their columns and indexes:
//! `readings (sensor_id, occurred_at, sequence)` (primary key) and `readings_asset_time`
//! serve the two `ListReadings` orders, `(sensor_id, bucket)` and `(asset_id, bucket)` the
//! rollups, `latest_readings (asset_id)` serves `Latest`.

use crate::QuerySettings;
use crate::args;
use crate::cursor::{Cursor, CursorError, ReadingFilter, ReadingPosition, Subject};
use crate::db::{PgInterval, PgTimestamp};
use crate::error::QueryError;
use crate::metrics::observe;
use sm_domain::Timestamp;
use sm_identity::TenantScope;
use sm_proto::convert::to_timestamp;
use sm_proto::v1::{self, reading_service_server::ReadingService};
use sm_storage::Pool;
use std::sync::Arc;
use tokio_postgres::Row;
use tonic::{Request, Response, Status};

const MINUTE_MICROS: i64 = 60_000_000;
const HOUR_MICROS: i64 = 60 * MINUTE_MICROS;

/// Pages of one asset's readings: `readings_asset_time` gives this order directly. Public, as
/// is [`LIST_BY_ASSET_AFTER`], so `benches/list_readings.rs` runs the very statements served.
pub const LIST_BY_ASSET: &str = "
    SELECT tenant_id, asset_id, sensor_id, sensor_type, occurred_at, value, unit, sequence,
           quality_flags, backfill, event_id, recorded_at
    FROM readings
    WHERE asset_id = $1 AND occurred_at >= $2 AND occurred_at < $3
    ORDER BY occurred_at DESC, sensor_id DESC, sequence DESC
    LIMIT $4";
/// The next page: rows strictly after the cursor, as a row comparison the index can seek to.
pub const LIST_BY_ASSET_AFTER: &str = "
    SELECT tenant_id, asset_id, sensor_id, sensor_type, occurred_at, value, unit, sequence,
           quality_flags, backfill, event_id, recorded_at
    FROM readings
    WHERE asset_id = $1 AND occurred_at >= $2 AND occurred_at < $3
      AND (occurred_at, sensor_id, sequence) < ($4, $5, $6)
    ORDER BY occurred_at DESC, sensor_id DESC, sequence DESC
    LIMIT $7";
/// One sensor: the primary key (sensor_id, occurred_at, sequence) scanned backwards. The
/// sensor is fixed, so ordering by (occurred_at, sequence) is the documented order.
const LIST_BY_SENSOR: &str = "
    SELECT tenant_id, asset_id, sensor_id, sensor_type, occurred_at, value, unit, sequence,
           quality_flags, backfill, event_id, recorded_at
    FROM readings
    WHERE sensor_id = $1 AND occurred_at >= $2 AND occurred_at < $3
    ORDER BY occurred_at DESC, sequence DESC
    LIMIT $4";
const LIST_BY_SENSOR_AFTER: &str = "
    SELECT tenant_id, asset_id, sensor_id, sensor_type, occurred_at, value, unit, sequence,
           quality_flags, backfill, event_id, recorded_at
    FROM readings
    WHERE sensor_id = $1 AND occurred_at >= $2 AND occurred_at < $3
      AND (occurred_at, sequence) < ($4, $5)
    ORDER BY occurred_at DESC, sequence DESC
    LIMIT $6";

const LATEST: &str = "
    SELECT tenant_id, asset_id, sensor_id, sensor_type, occurred_at, value, unit, sequence,
           quality_flags, backfill, event_id
    FROM latest_readings
    WHERE asset_id = $1
    ORDER BY sensor_id";
const ASSET_REGISTERED: &str = "SELECT EXISTS (SELECT 1 FROM assets WHERE asset_id = $1)";
const VISIBLE_ASSET: &str = ASSET_REGISTERED;
const VISIBLE_SENSOR: &str = "SELECT EXISTS (SELECT 1 FROM sensors WHERE sensor_id = $1)";

/// Where `Aggregate` reads from: the coarsest table whose rows nest exactly in the requested
/// buckets and range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateSource {
    /// `readings_1h`: width, start and end are whole hours.
    Hourly,
    /// `readings_1m`: width, start and end are whole minutes.
    Minutely,
    /// `readings`, bucketed with `date_bin`.
    Raw,
}

impl AggregateSource {
    /// A rollup row covers `[bucket, bucket + granularity)`, epoch-aligned (how the projector
    /// writes them). It lies wholly inside one requested bucket only if the width is a
    /// multiple of the granularity and the origin (`start`) is aligned; it lies inside the
    /// range only if `end` is aligned too. Otherwise a finer source is used: correct figures
    /// first, speed second.
    pub fn choose(start: i64, end: i64, width: i64) -> Self {
        let fits = |granularity: i64| {
            width % granularity == 0 && start.rem_euclid(granularity) == 0 && end.rem_euclid(granularity) == 0
        };
        if fits(HOUR_MICROS) {
            Self::Hourly
        } else if fits(MINUTE_MICROS) {
            Self::Minutely
        } else {
            Self::Raw
        }
    }

    /// The table name, also reported to the client as `source`.
    pub fn table(self) -> &'static str {
        match self {
            Self::Hourly => "readings_1h",
            Self::Minutely => "readings_1m",
            Self::Raw => "readings",
        }
    }

    /// The aggregate query; `$1` subject id, `[$2, $3)` range, `$4` width. Buckets start at
    /// `$2`. First and last are the values of the earliest and latest reading by
    /// (occurred_at, sequence); over rollups, of the earliest `first_at` and latest `last_at`.
    fn sql(self, subject: &Subject) -> String {
        let column = match subject {
            Subject::Asset(_) => "asset_id",
            Subject::Sensor(_) => "sensor_id",
        };
        match self {
            Self::Raw => format!(
                "SELECT sensor_id, date_bin($4, occurred_at, $2) AS bucket_start,
                        min(value), max(value), avg(value), count(*),
                        (array_agg(value ORDER BY occurred_at, sequence))[1],
                        (array_agg(value ORDER BY occurred_at DESC, sequence DESC))[1]
                 FROM readings
                 WHERE {column} = $1 AND occurred_at >= $2 AND occurred_at < $3
                 GROUP BY sensor_id, bucket_start
                 ORDER BY sensor_id, bucket_start"
            ),
            Self::Hourly | Self::Minutely => format!(
                "SELECT sensor_id, date_bin($4, bucket, $2) AS bucket_start,
                        min(min_value), max(max_value), sum(sum_value) / sum(count)::float8, sum(count)::bigint,
                        (array_agg(first_value ORDER BY first_at))[1],
                        (array_agg(last_value ORDER BY last_at DESC))[1]
                 FROM {table}
                 WHERE {column} = $1 AND bucket >= $2 AND bucket < $3
                 GROUP BY sensor_id, bucket_start
                 ORDER BY sensor_id, bucket_start",
                table = self.table()
            ),
        }
    }
}

/// The `ReadingService` implementation.
#[derive(Clone)]
pub struct Readings {
    pool: Pool,
    settings: Arc<QuerySettings>,
}

impl Readings {
    pub fn new(pool: Pool, settings: Arc<QuerySettings>) -> Self {
        Self { pool, settings }
    }

    async fn page(
        &self,
        scope: &TenantScope,
        request: v1::ListReadingsRequest,
    ) -> Result<v1::ListReadingsResponse, QueryError> {
        let subject = args::subject(&request.asset_id, &request.sensor_id)?;
        let start = args::optional_time("start", request.start.as_ref())?;
        let end = args::optional_time("end", request.end.as_ref())?;
        args::range(start, end)?;
        let page_size = args::page_size(request.page_size, &self.settings)?;
        let filter = ReadingFilter { subject, start, end };
        let after = match request.page_token.as_str() {
            "" => None,
            token => match Cursor::decode(token)? {
                Cursor::Readings { filter: issued, after } if issued == filter => Some(after),
                Cursor::Readings { filter: issued, .. } => {
                    return Err(CursorError::FilterMismatch { issued: issued.to_string() }.into());
                }
                other => {
                    return Err(
                        CursorError::WrongMethod { issued_by: other.method(), used_with: "ListReadings" }.into()
                    );
                }
            },
        };

        let (id, by_asset) = match &filter.subject {
            Subject::Asset(id) => (id, true),
            Subject::Sensor(id) => (id, false),
        };
        let start = PgTimestamp(start.unwrap_or(PgTimestamp::NEG_INFINITY.0));
        let end = PgTimestamp(end.unwrap_or(PgTimestamp::INFINITY.0));
        // One row more than the page tells whether another page follows, without a count.
        let limit = page_size as i64 + 1;
        let mut connection = self.pool.get().await?;
        let client = crate::db::scoped(&mut connection, scope).await?;
        let rows = match (&after, by_asset) {
            (None, true) => {
                let statement = client.prepare_cached(LIST_BY_ASSET).await?;
                client.query(&statement, &[id, &start, &end, &limit]).await?
            }
            (None, false) => {
                let statement = client.prepare_cached(LIST_BY_SENSOR).await?;
                client.query(&statement, &[id, &start, &end, &limit]).await?
            }
            (Some(after), true) => {
                let statement = client.prepare_cached(LIST_BY_ASSET_AFTER).await?;
                let position = PgTimestamp(after.occurred_at);
                client
                    .query(&statement, &[id, &start, &end, &position, &after.sensor_id, &after.sequence, &limit])
                    .await?
            }
            (Some(after), false) => {
                let statement = client.prepare_cached(LIST_BY_SENSOR_AFTER).await?;
                let position = PgTimestamp(after.occurred_at);
                client.query(&statement, &[id, &start, &end, &position, &after.sequence, &limit]).await?
            }
        };
        drop(client);
        drop(connection);

        let mut readings = Vec::with_capacity(rows.len().min(page_size));
        let mut last = None;
        for row in rows.iter().take(page_size) {
            let (position, reading) = reading_from_row(row, true)?;
            readings.push(reading);
            last = Some(position);
        }
        let next_page_token = match last {
            Some(after) if rows.len() > page_size => Cursor::Readings { filter, after }.encode(),
            _ => String::new(),
        };
        Ok(v1::ListReadingsResponse { readings, next_page_token })
    }

    async fn buckets(
        &self,
        scope: &TenantScope,
        request: v1::AggregateRequest,
    ) -> Result<v1::AggregateResponse, QueryError> {
        let subject = args::subject(&request.asset_id, &request.sensor_id)?;
        let start = args::required_time("start", request.start.as_ref())?;
        let end = args::required_time("end", request.end.as_ref())?;
        args::range(Some(start), Some(end))?;
        let width = args::bucket_width(request.bucket_width.as_ref())?;
        args::bucket_count(start, end, width)?;
        let source = AggregateSource::choose(start, end, width);
        let id = match &subject {
            Subject::Asset(id) | Subject::Sensor(id) => id,
        };

        let mut connection = self.pool.get().await?;
        let client = crate::db::scoped(&mut connection, scope).await?;
        if source != AggregateSource::Raw && *scope != TenantScope::All {
            // Rollups on TimescaleDB are continuous aggregates, which take no row-level
            // policy: only a subject the caller can see (its asset or sensor row passes the
            // policies) is read from them. A hidden one answers as an unknown one: no buckets.
            let visible = match &subject {
                Subject::Asset(_) => VISIBLE_ASSET,
                Subject::Sensor(_) => VISIBLE_SENSOR,
            };
            let statement = client.prepare_cached(visible).await?;
            if !client.query_one(&statement, &[id]).await?.try_get::<_, bool>(0)? {
                return Ok(v1::AggregateResponse { buckets: Vec::new(), source: source.table().to_owned() });
            }
        }
        let statement = client.prepare_cached(&source.sql(&subject)).await?;
        let rows = client.query(&statement, &[id, &PgTimestamp(start), &PgTimestamp(end), &PgInterval(width)]).await?;
        drop(client);
        drop(connection);

        let buckets = rows
            .iter()
            .map(|row| {
                Ok(v1::AggregateBucket {
                    sensor_id: row.try_get(0)?,
                    bucket_start: Some(to_timestamp(Timestamp(row.try_get::<_, PgTimestamp>(1)?.0))),
                    min: row.try_get(2)?,
                    max: row.try_get(3)?,
                    avg: row.try_get(4)?,
                    count: row.try_get(5)?,
                    first: row.try_get(6)?,
                    last: row.try_get(7)?,
                })
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
        Ok(v1::AggregateResponse { buckets, source: source.table().to_owned() })
    }

    async fn latest_of_asset(
        &self,
        scope: &TenantScope,
        request: v1::LatestRequest,
    ) -> Result<v1::LatestResponse, QueryError> {
        if request.asset_id.is_empty() {
            return Err(QueryError::invalid("asset_id", "is required"));
        }
        let mut connection = self.pool.get().await?;
        let client = crate::db::scoped(&mut connection, scope).await?;
        let statement = client.prepare_cached(LATEST).await?;
        let rows = client.query(&statement, &[&request.asset_id]).await?;
        if rows.is_empty() {
            // A registered asset that has not reported yet is a valid, empty answer.
            let statement = client.prepare_cached(ASSET_REGISTERED).await?;
            let registered: bool = client.query_one(&statement, &[&request.asset_id]).await?.try_get(0)?;
            if !registered {
                return Err(QueryError::AssetNotFound(request.asset_id));
            }
        }
        drop(client);
        drop(connection);
        let readings =
            rows.iter().map(|row| reading_from_row(row, false).map(|(_, r)| r)).collect::<Result<Vec<_>, _>>()?;
        Ok(v1::LatestResponse { readings })
    }
}

/// One row of `readings` or `latest_readings` (which lacks `recorded_at`), with its position
/// in `ListReadings` order.
fn reading_from_row(row: &Row, has_recorded_at: bool) -> Result<(ReadingPosition, v1::Reading), tokio_postgres::Error> {
    let occurred_at: PgTimestamp = row.try_get("occurred_at")?;
    let sensor_id: String = row.try_get("sensor_id")?;
    let sequence: i64 = row.try_get("sequence")?;
    let recorded_at = if has_recorded_at {
        Some(to_timestamp(Timestamp(row.try_get::<_, PgTimestamp>("recorded_at")?.0)))
    } else {
        None
    };
    let reading = v1::Reading {
        tenant_id: row.try_get("tenant_id")?,
        asset_id: row.try_get("asset_id")?,
        sensor_id: sensor_id.clone(),
        sensor_type: row.try_get("sensor_type")?,
        occurred_at: Some(to_timestamp(Timestamp(occurred_at.0))),
        value: row.try_get("value")?,
        unit: row.try_get("unit")?,
        sequence,
        quality_flags: row.try_get::<_, Option<Vec<String>>>("quality_flags")?.unwrap_or_default(),
        backfill: row.try_get("backfill")?,
        event_id: row.try_get("event_id")?,
        recorded_at,
    };
    Ok((ReadingPosition { occurred_at: occurred_at.0, sensor_id, sequence }, reading))
}

#[tonic::async_trait]
impl ReadingService for Readings {
    async fn list_readings(
        &self,
        request: Request<v1::ListReadingsRequest>,
    ) -> Result<Response<v1::ListReadingsResponse>, Status> {
        observe("ListReadings", async move {
            let scope = crate::auth::tenants(&request)?;
            self.page(&scope, request.into_inner()).await
        })
        .await
    }

    async fn aggregate(
        &self,
        request: Request<v1::AggregateRequest>,
    ) -> Result<Response<v1::AggregateResponse>, Status> {
        observe("Aggregate", async move {
            let scope = crate::auth::tenants(&request)?;
            self.buckets(&scope, request.into_inner()).await
        })
        .await
    }

    async fn latest(&self, request: Request<v1::LatestRequest>) -> Result<Response<v1::LatestResponse>, Status> {
        observe("Latest", async move {
            let scope = crate::auth::tenants(&request)?;
            self.latest_of_asset(&scope, request.into_inner()).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_use_the_coarsest_rollup_that_nests_exactly() {
        let day = 24 * HOUR_MICROS;
        let t0 = 20_000 * day; // midnight, so aligned to every granularity
        assert_eq!(AggregateSource::choose(t0, t0 + day, HOUR_MICROS), AggregateSource::Hourly);
        assert_eq!(AggregateSource::choose(t0, t0 + day, 6 * HOUR_MICROS), AggregateSource::Hourly);
        assert_eq!(AggregateSource::choose(t0, t0 + day, 15 * MINUTE_MICROS), AggregateSource::Minutely);
        assert_eq!(AggregateSource::choose(t0, t0 + day, 90 * 1_000_000), AggregateSource::Raw);
        // Whole hours of width, but the range starts or ends mid-hour: minute rollups fit.
        assert_eq!(AggregateSource::choose(t0 + MINUTE_MICROS, t0 + day, HOUR_MICROS), AggregateSource::Minutely);
        assert_eq!(AggregateSource::choose(t0, t0 + day - MINUTE_MICROS, HOUR_MICROS), AggregateSource::Minutely);
        // Not even on a minute: only raw readings give exact figures.
        assert_eq!(AggregateSource::choose(t0 + 1, t0 + day, HOUR_MICROS), AggregateSource::Raw);
        // Before 1970 alignment still holds (rem_euclid, not %).
        assert_eq!(AggregateSource::choose(-day, 0, HOUR_MICROS), AggregateSource::Hourly);
    }

    #[test]
    fn aggregate_sql_filters_on_the_subject_column() {
        let sql = AggregateSource::Raw.sql(&Subject::Asset("a".into()));
        assert!(sql.contains("WHERE asset_id = $1") && sql.contains("FROM readings"));
        let sql = AggregateSource::Minutely.sql(&Subject::Sensor("s".into()));
        assert!(sql.contains("WHERE sensor_id = $1") && sql.contains("FROM readings_1m"));
    }
}
