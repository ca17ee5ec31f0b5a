//! What the analytics agents found into `anomalies`, `stale_sensors`, `drift_events` and
//! `retrain_requests`. Rows are keyed by event id, so a replay rewrites the same rows.

use sm_domain::{AlertEvent, Envelope};
use sm_storage::Projection;

/// The alerts projection (`sm.anomalies.v1` and `sm.drift.v1`).
pub struct AlertsProjection;

/// `$n` (µs since the epoch) as a timestamptz.
macro_rules! ts {
    ($n:literal) => {
        concat!("(timestamptz 'epoch' + $", $n, "::bigint * interval '1 microsecond')")
    };
}

impl Projection for AlertsProjection {
    type Event = AlertEvent;

    fn name(&self) -> &'static str {
        "alerts"
    }

    async fn write(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        events: &[Envelope<AlertEvent>],
    ) -> Result<(), tokio_postgres::Error> {
        for event in events {
            let h = &event.header;
            let (id, tenant, asset) = (h.event_id.to_string(), h.tenant_id.as_str(), h.asset_id.as_str());
            let (occurred, recorded) = (h.occurred_at.as_micros(), h.recorded_at.as_micros());
            match &event.payload {
                AlertEvent::Anomaly(a) => {
                    let contributing = contributing_json(a);
                    let window_start = a.window_start.map(|t| t.as_micros());
                    let sensor_id = a.sensor_id.as_ref().map(|s| s.as_str());
                    tx.execute(
                        concat!(
                            "INSERT INTO anomalies (event_id, tenant_id, asset_id, scope, sensor_id, sensor_type, detector,
                                 score, threshold, severity, value, expected_low, expected_high, contributing,
                                 triggered_by, window_start, backfill, occurred_at, recorded_at)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::text::jsonb, $15, ",
                            ts!(16),
                            ", $17, ",
                            ts!(18),
                            ", ",
                            ts!(19),
                            ") ON CONFLICT (event_id) DO NOTHING"
                        ),
                        &[
                            &id,
                            &tenant,
                            &asset,
                            &a.scope,
                            &sensor_id,
                            &a.sensor_type,
                            &a.detector,
                            &a.score,
                            &a.threshold,
                            &(a.severity.clamp(0, 32_767) as i16),
                            &a.value,
                            &a.expected_low,
                            &a.expected_high,
                            &contributing,
                            &a.triggered_by,
                            &window_start,
                            &a.backfill,
                            &occurred,
                            &recorded,
                        ],
                    )
                    .await?;
                }
                AlertEvent::Stale(s) => {
                    tx.execute(
                        concat!(
                            "INSERT INTO stale_sensors (event_id, tenant_id, asset_id, sensor_id, sensor_type,
                                 last_reading_at, silent_for_ms, expected_interval_ms, stale_after_ms, occurred_at)
                             VALUES ($1, $2, $3, $4, $5, ",
                            ts!(6),
                            ", $7, $8, $9, ",
                            ts!(10),
                            ") ON CONFLICT (event_id) DO NOTHING"
                        ),
                        &[
                            &id,
                            &tenant,
                            &asset,
                            &s.sensor_id.as_str(),
                            &s.sensor_type,
                            &s.last_reading_at.as_micros(),
                            &s.silent_for_ms,
                            &s.expected_interval_ms,
                            &s.stale_after_ms,
                            &occurred,
                        ],
                    )
                    .await?;
                }
                AlertEvent::Drift(d) => {
                    tx.execute(
                        concat!(
                            "INSERT INTO drift_events (event_id, tenant_id, asset_id, sensor_id, sensor_type, test,
                                 statistic, p_value, psi, reference_start, reference_end, reference_size,
                                 current_start, current_end, current_size, backfill, occurred_at, recorded_at)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, ",
                            ts!(10),
                            ", ",
                            ts!(11),
                            ", $12, ",
                            ts!(13),
                            ", ",
                            ts!(14),
                            ", $15, $16, ",
                            ts!(17),
                            ", ",
                            ts!(18),
                            ") ON CONFLICT (event_id) DO NOTHING"
                        ),
                        &[
                            &id,
                            &tenant,
                            &asset,
                            &d.sensor_id.as_str(),
                            &d.sensor_type,
                            &d.test,
                            &d.statistic,
                            &d.p_value,
                            &d.psi,
                            &d.reference_start.as_micros(),
                            &d.reference_end.as_micros(),
                            &d.reference_size,
                            &d.current_start.as_micros(),
                            &d.current_end.as_micros(),
                            &d.current_size,
                            &d.backfill,
                            &occurred,
                            &recorded,
                        ],
                    )
                    .await?;
                }
                AlertEvent::Retrain(r) => {
                    tx.execute(
                        concat!(
                            "INSERT INTO retrain_requests (event_id, tenant_id, asset_id, sensor_id, sensor_type, reason,
                                 history_from, history_to, occurred_at)
                             VALUES ($1, $2, $3, $4, $5, $6, ",
                            ts!(7),
                            ", ",
                            ts!(8),
                            ", ",
                            ts!(9),
                            ") ON CONFLICT (event_id) DO NOTHING"
                        ),
                        &[
                            &id,
                            &tenant,
                            &asset,
                            &r.sensor_id.as_str(),
                            &r.sensor_type,
                            &r.reason,
                            &r.history_from.as_micros(),
                            &r.history_to.as_micros(),
                            &occurred,
                        ],
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }

    async fn clear(&self, tx: &tokio_postgres::Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        tx.batch_execute("TRUNCATE anomalies, stale_sensors, drift_events, retrain_requests").await
    }
}

/// `[{"sensor_id": ..., "share": ..., "value": ...}, ...]`.
fn contributing_json(anomaly: &sm_domain::AnomalyDetected) -> String {
    let items: Vec<serde_json::Value> = anomaly
        .contributing
        .iter()
        .map(|c| serde_json::json!({"sensor_id": c.sensor_id.as_str(), "share": c.share, "value": c.value}))
        .collect();
    serde_json::Value::Array(items).to_string()
}
