//! Asset registrations into `assets` and `sensors`. A registration replaces the asset's
//! sensor list (sensors no longer listed are removed); `registered_at` keeps the first time.

use sm_domain::{AssetRegistered, Envelope};
use sm_storage::Projection;

/// The asset registry projection.
pub struct AssetsProjection;

impl Projection for AssetsProjection {
    type Event = AssetRegistered;

    fn name(&self) -> &'static str {
        "assets"
    }

    async fn write(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        events: &[Envelope<AssetRegistered>],
    ) -> Result<(), tokio_postgres::Error> {
        for event in events {
            let (h, a) = (&event.header, &event.payload);
            let at = h.recorded_at.as_micros();
            tx.execute(
                "INSERT INTO assets (asset_id, tenant_id, name, asset_type, site, registered_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, timestamptz 'epoch' + $6::bigint * interval '1 microsecond',
                         timestamptz 'epoch' + $6::bigint * interval '1 microsecond')
                 ON CONFLICT (asset_id) DO UPDATE SET tenant_id = EXCLUDED.tenant_id, name = EXCLUDED.name,
                     asset_type = EXCLUDED.asset_type, site = EXCLUDED.site, updated_at = EXCLUDED.updated_at",
                &[&h.asset_id.0, &h.tenant_id.0, &a.name, &a.asset_type, &a.site, &at],
            )
            .await?;
            let ids: Vec<&str> = a.sensors.iter().map(|s| s.sensor_id.as_str()).collect();
            tx.execute("DELETE FROM sensors WHERE asset_id = $1 AND sensor_id <> ALL($2)", &[&h.asset_id.0, &ids])
                .await?;
            for s in &a.sensors {
                tx.execute(
                    "INSERT INTO sensors (sensor_id, asset_id, sensor_type, unit, min_value, max_value, expected_interval_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (sensor_id) DO UPDATE SET asset_id = EXCLUDED.asset_id, sensor_type = EXCLUDED.sensor_type,
                         unit = EXCLUDED.unit, min_value = EXCLUDED.min_value, max_value = EXCLUDED.max_value,
                         expected_interval_ms = EXCLUDED.expected_interval_ms",
                    &[&s.sensor_id.0, &h.asset_id.0, &s.sensor_type, &s.unit, &s.min_value, &s.max_value, &s.expected_interval_ms],
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn clear(&self, tx: &tokio_postgres::Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        tx.batch_execute("TRUNCATE assets, sensors").await
    }
}
