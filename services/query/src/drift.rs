//! `sm.v1.DriftService`: `CheckDrift`, the drift agent's two-sample test on demand over the
//! readings projection.
//!
//! The test is `sm_analytics::drift::check` with the agent's `DriftConfig::default()` (its KS
//! significance, PSI threshold and minimum window size), so an operator asking "has this
//! sensor drifted since yesterday?" gets the answer the agent's rules give. What differs from
//! the agent is only the windows: the caller chooses them, in event time.
//!
//! A window holding more than [`MAX_WINDOW_VALUES`] readings is sampled in SQL: every reading
//! whose rank `i` (by event time, then sequence) starts a new `n / MAX_WINDOW_VALUES` stride,
//! i.e. `floor(i·cap/n) > floor((i−1)·cap/n)`. That keeps exactly the cap, evenly spread over
//! the window, and the same data always gives the same sample (and the same p-value), which a
//! random sample would not. The test runs on the blocking pool: sorting and an exact KS
//! p-value on thousands of values take milliseconds.
//!
//! Not here: drift events the agent found (`ListDrift`), or any state: nothing is stored.

use crate::args;
use crate::db::PgTimestamp;
use crate::error::QueryError;
use crate::metrics::observe;
use sm_analytics::drift::{DriftConfig, check};
use sm_domain::Timestamp;
use sm_identity::TenantScope;
use sm_proto::convert::to_timestamp;
use sm_proto::v1::{self, drift_service_server::DriftService};
use sm_storage::Pool;
use tonic::{Request, Response, Status};

/// Most values one window contributes to the test.
pub const MAX_WINDOW_VALUES: i64 = 100_000;
/// Length of the current window when `current_from` is unset.
pub const DEFAULT_CURRENT_MICROS: i64 = 3_600_000_000;
/// Length of the reference window when `reference_from` is unset.
pub const DEFAULT_REFERENCE_MICROS: i64 = 24 * 3_600_000_000;
/// Fewest and most PSI bins a request may ask for.
const PSI_BINS: std::ops::RangeInclusive<u32> = 2..=100;

/// A window's values in event time order, sampled down to `$4` when it holds more; each row
/// also carries the window's reading count `n`. Public so the tests check the sample.
pub const WINDOW_VALUES: &str = "
    SELECT value, n FROM (
        SELECT value, occurred_at, sequence,
               row_number() OVER (ORDER BY occurred_at, sequence) AS i,
               count(*) OVER () AS n
        FROM readings
        WHERE sensor_id = $1 AND occurred_at >= $2 AND occurred_at < $3
    ) w
    WHERE n <= $4 OR (i * $4) / n > ((i - 1) * $4) / n
    ORDER BY occurred_at, sequence";
/// Whether a sensor exists at all: registered, or has readings.
pub const SENSOR_KNOWN: &str = "
    SELECT EXISTS (SELECT 1 FROM sensors WHERE sensor_id = $1)
        OR EXISTS (SELECT 1 FROM readings WHERE sensor_id = $1)";

/// The two windows of a check, with the defaults filled in (µs, half-open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    pub reference: (i64, i64),
    pub current: (i64, i64),
}

impl Windows {
    /// Resolves the request's windows: current ends at `current_to` or `now` and lasts an hour
    /// unless `current_from` is set; the reference ends at `reference_to` or where the current
    /// window starts, and lasts 24 hours unless `reference_from` is set.
    pub fn resolve(request: &v1::CheckDriftRequest, now: i64) -> Result<Self, QueryError> {
        let current_to = args::optional_time("current_to", request.current_to.as_ref())?.unwrap_or(now);
        let current_from = args::optional_time("current_from", request.current_from.as_ref())?
            .unwrap_or(current_to.saturating_sub(DEFAULT_CURRENT_MICROS));
        let reference_to = args::optional_time("reference_to", request.reference_to.as_ref())?.unwrap_or(current_from);
        let reference_from = args::optional_time("reference_from", request.reference_from.as_ref())?
            .unwrap_or(reference_to.saturating_sub(DEFAULT_REFERENCE_MICROS));
        if current_to <= current_from {
            return Err(QueryError::invalid("current_to", "must be after current_from (the window is [from, to))"));
        }
        if reference_to <= reference_from {
            return Err(QueryError::invalid(
                "reference_to",
                "must be after reference_from (the window is [from, to)); unset, it is current_from",
            ));
        }
        Ok(Self { reference: (reference_from, reference_to), current: (current_from, current_to) })
    }
}

/// The agent's drift rules, with the request's PSI bins if it sets them.
pub fn drift_config(psi_bins: Option<u32>) -> Result<DriftConfig, QueryError> {
    let mut config = DriftConfig::default();
    if let Some(bins) = psi_bins {
        if !PSI_BINS.contains(&bins) {
            return Err(QueryError::invalid("psi_bins", format!("{bins} is not in 2..=100; leave it unset for 10")));
        }
        config.psi_bins = bins as usize;
    }
    Ok(config)
}

/// The `DriftService` implementation.
#[derive(Clone)]
pub struct Drift {
    pool: Pool,
}

impl Drift {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    async fn check_drift(
        &self,
        scope: &TenantScope,
        request: v1::CheckDriftRequest,
    ) -> Result<v1::CheckDriftResponse, QueryError> {
        if request.sensor_id.is_empty() {
            return Err(QueryError::invalid("sensor_id", "is required"));
        }
        let windows = Windows::resolve(&request, Timestamp::now().as_micros())?;
        let config = drift_config(request.psi_bins)?;

        let mut connection = self.pool.get().await?;
        let client = crate::db::scoped(&mut connection, scope).await?;
        let statement = client.prepare_cached(WINDOW_VALUES).await?;
        let mut samples = Vec::with_capacity(2);
        for (from, to) in [windows.reference, windows.current] {
            let rows = client
                .query(&statement, &[&request.sensor_id, &PgTimestamp(from), &PgTimestamp(to), &MAX_WINDOW_VALUES])
                .await?;
            let total: i64 = match rows.first() {
                Some(row) => row.try_get(1)?,
                None => 0,
            };
            let values = rows.iter().map(|row| row.try_get::<_, f64>(0)).collect::<Result<Vec<f64>, _>>()?;
            samples.push((values, total));
        }
        let current = samples.pop().unwrap_or_default();
        let reference = samples.pop().unwrap_or_default();
        for (window, (values, _), (from, to)) in
            [("reference", &reference, windows.reference), ("current", &current, windows.current)]
        {
            if values.is_empty() {
                let statement = client.prepare_cached(SENSOR_KNOWN).await?;
                let known: bool = client.query_one(&statement, &[&request.sensor_id]).await?.try_get(0)?;
                if !known {
                    return Err(QueryError::SensorNotFound(request.sensor_id));
                }
                return Err(QueryError::EmptyWindow {
                    window,
                    sensor_id: request.sensor_id,
                    from_micros: from,
                    to_micros: to,
                });
            }
        }
        drop(client);
        drop(connection);

        let ((reference, reference_readings), (current, current_readings)) = (reference, current);
        let (reference_size, current_size) = (reference.len() as i32, current.len() as i32);
        let result = tokio::task::spawn_blocking(move || check(&reference, &current, &config)).await?;
        let at = |micros| Some(to_timestamp(Timestamp(micros)));
        Ok(v1::CheckDriftResponse {
            ks_statistic: result.ks.statistic,
            p_value: result.ks.p_value,
            psi: result.psi,
            drifted: result.drifted,
            reference_size,
            current_size,
            reference_readings,
            current_readings,
            reference_from: at(windows.reference.0),
            reference_to: at(windows.reference.1),
            current_from: at(windows.current.0),
            current_to: at(windows.current.1),
        })
    }
}

#[tonic::async_trait]
impl DriftService for Drift {
    async fn check_drift(
        &self,
        request: Request<v1::CheckDriftRequest>,
    ) -> Result<Response<v1::CheckDriftResponse>, Status> {
        observe("CheckDrift", async move {
            let scope = crate::auth::tenants(&request)?;
            Drift::check_drift(self, &scope, request.into_inner()).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_000_000_000;

    fn ts(micros: i64) -> Option<prost_types::Timestamp> {
        Some(to_timestamp(Timestamp(micros)))
    }

    #[test]
    fn unset_windows_are_the_last_hour_and_the_day_before_it() {
        let windows = Windows::resolve(&v1::CheckDriftRequest::default(), NOW).unwrap();
        let hour = DEFAULT_CURRENT_MICROS;
        assert_eq!(windows.current, (NOW - hour, NOW));
        assert_eq!(windows.reference, (NOW - hour - 24 * hour, NOW - hour));

        // Only current_from: up to now; the reference still ends where current starts.
        let request = v1::CheckDriftRequest { current_from: ts(NOW - 10 * hour), ..Default::default() };
        let windows = Windows::resolve(&request, NOW).unwrap();
        assert_eq!(windows.current, (NOW - 10 * hour, NOW));
        assert_eq!(windows.reference.1, NOW - 10 * hour);

        // An explicit reference is used as given, even after the current window.
        let request = v1::CheckDriftRequest {
            reference_from: ts(NOW),
            reference_to: ts(NOW + hour),
            current_to: ts(NOW - hour),
            ..Default::default()
        };
        let windows = Windows::resolve(&request, NOW).unwrap();
        assert_eq!(windows, Windows { reference: (NOW, NOW + hour), current: (NOW - 2 * hour, NOW - hour) });
    }

    #[test]
    fn empty_or_reversed_windows_name_the_field() {
        let message = |request: v1::CheckDriftRequest| {
            Status::from(Windows::resolve(&request, NOW).unwrap_err()).message().to_owned()
        };
        let reversed = v1::CheckDriftRequest { current_from: ts(NOW), current_to: ts(NOW - 1), ..Default::default() };
        assert!(message(reversed).starts_with("current_to:"));
        let reversed = v1::CheckDriftRequest { reference_from: ts(NOW - 1), ..Default::default() };
        assert!(message(reversed).starts_with("reference_to:"), "reference after its default end");
    }

    #[test]
    fn psi_bins_default_to_the_agents_and_are_bounded() {
        assert_eq!(drift_config(None).unwrap(), DriftConfig::default());
        assert_eq!(drift_config(Some(20)).unwrap().psi_bins, 20);
        for bad in [0, 1, 101] {
            let status = Status::from(drift_config(Some(bad)).unwrap_err());
            assert!(status.message().starts_with("psi_bins:"), "{}", status.message());
        }
    }
}
