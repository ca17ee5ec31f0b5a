//! Validated readings into `readings` (one row per reading), `latest_readings` (per sensor, the
//! reading with the greatest event time: late data never overwrites newer) and the minute and
//! hour rollups. One statement per batch: rows go in through `unnest` arrays, and the rollups
//! and latest values are computed from the rows that statement really inserted, so a replayed
//! batch changes nothing.

use sm_domain::{Envelope, ValidatedReading};
use sm_storage::{Flavor, Projection};

/// The readings projection.
pub struct ReadingsProjection {
    flavor: Flavor,
    statement: String,
}

impl ReadingsProjection {
    pub fn new(flavor: Flavor) -> Self {
        // With TimescaleDB the rollups are continuous aggregates, maintained by the server.
        let rollups = match flavor {
            Flavor::Timescale => String::new(),
            Flavor::Native => format!(",\n{},\n{}", rollup("readings_1m", "1 minute"), rollup("readings_1h", "1 hour")),
        };
        let statement = format!(
            "WITH input AS (
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::float8[],
                                      $7::text[], $8::bigint[], $9::text[], $10::bool[], $11::text[], $12::bigint[])
                     AS t(tenant_id, asset_id, sensor_id, sensor_type, occurred_us, value, unit, sequence, flags,
                          backfill, event_id, recorded_us)
             ),
             inserted AS (
                 INSERT INTO readings (tenant_id, asset_id, sensor_id, sensor_type, occurred_at, value, unit, sequence,
                                       quality_flags, backfill, event_id, recorded_at)
                 SELECT tenant_id, asset_id, sensor_id, sensor_type,
                        timestamptz 'epoch' + occurred_us * interval '1 microsecond', value, unit, sequence,
                        CASE WHEN flags = '' THEN '{{}}'::text[] ELSE string_to_array(flags, ',') END, backfill, event_id,
                        timestamptz 'epoch' + recorded_us * interval '1 microsecond'
                 FROM input
                 ON CONFLICT DO NOTHING
                 RETURNING *
             ),
             latest AS (
                 INSERT INTO latest_readings AS l (sensor_id, tenant_id, asset_id, sensor_type, occurred_at, value, unit,
                                                   sequence, quality_flags, backfill, event_id)
                 SELECT DISTINCT ON (sensor_id) sensor_id, tenant_id, asset_id, sensor_type, occurred_at, value, unit,
                        sequence, quality_flags, backfill, event_id
                 FROM inserted
                 ORDER BY sensor_id, occurred_at DESC, sequence DESC
                 ON CONFLICT (sensor_id) DO UPDATE SET
                     tenant_id = EXCLUDED.tenant_id, asset_id = EXCLUDED.asset_id, sensor_type = EXCLUDED.sensor_type,
                     occurred_at = EXCLUDED.occurred_at, value = EXCLUDED.value, unit = EXCLUDED.unit,
                     sequence = EXCLUDED.sequence, quality_flags = EXCLUDED.quality_flags,
                     backfill = EXCLUDED.backfill, event_id = EXCLUDED.event_id
                 WHERE (l.occurred_at, l.sequence) < (EXCLUDED.occurred_at, EXCLUDED.sequence)
             ){rollups}
             SELECT count(*) FROM inserted"
        );
        Self { flavor, statement }
    }

    /// Native partitioning needs a partition per day before rows of that day arrive.
    async fn ensure_partitions(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        events: &[Envelope<ValidatedReading>],
    ) -> Result<(), tokio_postgres::Error> {
        if self.flavor == Flavor::Timescale {
            return Ok(());
        }
        let mut days: Vec<i64> =
            events.iter().map(|e| e.header.occurred_at.as_micros().div_euclid(DAY_MICROS)).collect();
        days.sort_unstable();
        days.dedup();
        for day in days {
            let name = partition_name(day);
            let exists = tx.query_one("SELECT to_regclass($1) IS NOT NULL", &[&name]).await?.get::<_, bool>(0);
            if !exists {
                tx.batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {name} PARTITION OF readings
                     FOR VALUES FROM (timestamptz 'epoch' + interval '1 day' * {day})
                                  TO (timestamptz 'epoch' + interval '1 day' * {next})",
                    next = day + 1
                ))
                .await?;
            }
        }
        Ok(())
    }
}

const DAY_MICROS: i64 = 86_400_000_000;

/// `readings_d20418` for day 20418 since the epoch (`readings_dm3` before it).
fn partition_name(day: i64) -> String {
    if day < 0 { format!("readings_dm{}", -day) } else { format!("readings_d{day}") }
}

/// An upsert of `table` from the inserted rows, merging buckets that already exist.
fn rollup(table: &str, width: &str) -> String {
    format!(
        "{table} AS (
             INSERT INTO {table} AS r (sensor_id, asset_id, bucket, min_value, max_value, sum_value, count,
                                       first_at, first_value, last_at, last_value)
             SELECT sensor_id, min(asset_id), date_bin(interval '{width}', occurred_at, timestamptz 'epoch'),
                    min(value), max(value), sum(value), count(*),
                    min(occurred_at), (array_agg(value ORDER BY occurred_at, sequence))[1],
                    max(occurred_at), (array_agg(value ORDER BY occurred_at DESC, sequence DESC))[1]
             FROM inserted
             GROUP BY sensor_id, 3
             ON CONFLICT (sensor_id, bucket) DO UPDATE SET
                 min_value = least(r.min_value, EXCLUDED.min_value),
                 max_value = greatest(r.max_value, EXCLUDED.max_value),
                 sum_value = r.sum_value + EXCLUDED.sum_value,
                 count = r.count + EXCLUDED.count,
                 first_value = CASE WHEN EXCLUDED.first_at < r.first_at THEN EXCLUDED.first_value ELSE r.first_value END,
                 first_at = least(r.first_at, EXCLUDED.first_at),
                 last_value = CASE WHEN EXCLUDED.last_at >= r.last_at THEN EXCLUDED.last_value ELSE r.last_value END,
                 last_at = greatest(r.last_at, EXCLUDED.last_at)
         )"
    )
}

impl Projection for ReadingsProjection {
    type Event = ValidatedReading;

    fn name(&self) -> &'static str {
        "readings"
    }

    async fn write(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        events: &[Envelope<ValidatedReading>],
    ) -> Result<(), tokio_postgres::Error> {
        self.ensure_partitions(tx, events).await?;
        let column = |f: fn(&Envelope<ValidatedReading>) -> String| events.iter().map(f).collect::<Vec<String>>();
        let tenants = column(|e| e.header.tenant_id.0.clone());
        let assets = column(|e| e.header.asset_id.0.clone());
        let sensors = column(|e| e.payload.sensor_id.0.clone());
        let types = column(|e| e.payload.sensor_type.clone());
        let occurred: Vec<i64> = events.iter().map(|e| e.header.occurred_at.as_micros()).collect();
        let values: Vec<f64> = events.iter().map(|e| e.payload.value).collect();
        let units = column(|e| e.payload.unit.clone());
        let sequences: Vec<i64> = events.iter().map(|e| e.payload.sequence).collect();
        let flags = column(|e| e.payload.quality_flags.join(","));
        let backfill: Vec<bool> = events.iter().map(|e| e.payload.backfill).collect();
        let event_ids = column(|e| e.header.event_id.to_string());
        let recorded: Vec<i64> = events.iter().map(|e| e.header.recorded_at.as_micros()).collect();
        tx.query_one(
            &self.statement,
            &[
                &tenants, &assets, &sensors, &types, &occurred, &values, &units, &sequences, &flags, &backfill,
                &event_ids, &recorded,
            ],
        )
        .await?;
        Ok(())
    }

    async fn clear(&self, tx: &tokio_postgres::Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        let rollups = if self.flavor == Flavor::Native { ", readings_1m, readings_1h" } else { "" };
        tx.batch_execute(&format!("TRUNCATE readings, latest_readings{rollups}")).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_are_valid_identifiers() {
        assert_eq!(partition_name(20_418), "readings_d20418");
        assert_eq!(partition_name(-3), "readings_dm3");
    }
}
