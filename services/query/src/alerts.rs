//! `sm.v1.AlertService`: anomalies and drift from the projector's tables (`anomalies`,
//! `drift_events`), newest first in keyset pages, and `StreamAlerts`, the live alert feed
//! ([`crate::feed`]) filtered per stream.
//!
//! Each page is one statement holding only the filters the request set, so every combination
//! is a plain conjunction that the `(occurred_at DESC, event_id DESC)` indexes (alone, or
//! behind `asset_id` or `sensor_id`) serve in order, and the next page seeks to the row after
//! the cursor. Rows and live events become messages through the same conversion per message
//! (`sm_proto::convert`): a row is read back into the domain event it was projected from.

use crate::QuerySettings;
use crate::args;
use crate::cursor::{AlertFilter, AlertPosition, Cursor, CursorError};
use crate::db::PgTimestamp;
use crate::error::QueryError;
use crate::feed::{AlertFeed, Subscription};
use crate::metrics::observe;
use futures::Stream;
use sm_domain::{AnomalyDetected, Contribution, DriftDetected, QUOTE_MAX_CHARS, SensorId, Timestamp, quote};
use sm_identity::TenantScope;
use sm_proto::convert::{self, AlertOrigin};
use sm_proto::v1::{self, alert_service_server::AlertService};
use sm_storage::Pool;
use std::pin::Pin;
use std::sync::Arc;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use tonic::{Request, Response, Status};

/// Highest severity an anomaly can have (`sm_analytics::sensor::severity`).
pub const MAX_SEVERITY: i32 = 5;

/// The live alerts of one `StreamAlerts` call.
pub type AlertStream = Pin<Box<dyn Stream<Item = Result<v1::Alert, Status>> + Send>>;

/// The two listed tables, and what differs between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AlertTable {
    Anomalies,
    Drift,
}

impl AlertTable {
    fn name(self) -> &'static str {
        match self {
            Self::Anomalies => "anomalies",
            Self::Drift => "drift_events",
        }
    }

    fn method(self) -> &'static str {
        match self {
            Self::Anomalies => "ListAnomalies",
            Self::Drift => "ListDrift",
        }
    }

    /// `contributing` is read as text: it is parsed into the domain's `Contribution`s, and
    /// the driver then needs no JSON feature.
    fn columns(self) -> &'static str {
        match self {
            Self::Anomalies => {
                "event_id, tenant_id, asset_id, scope, sensor_id, sensor_type, detector, score, threshold, severity,
                 value, expected_low, expected_high, contributing::text AS contributing, triggered_by, window_start,
                 backfill, occurred_at, recorded_at"
            }
            Self::Drift => {
                "event_id, tenant_id, asset_id, sensor_id, sensor_type, test, statistic, p_value, psi, reference_start,
                 reference_end, reference_size, current_start, current_end, current_size, backfill, occurred_at,
                 recorded_at"
            }
        }
    }

    fn cursor(self, filter: AlertFilter, after: AlertPosition) -> Cursor {
        match self {
            Self::Anomalies => Cursor::Anomalies { filter, after },
            Self::Drift => Cursor::Drift { filter, after },
        }
    }

    /// The position a page token continues from, if it was issued by this method for the
    /// same filters.
    fn continue_from(self, token: &str, filter: &AlertFilter) -> Result<Option<AlertPosition>, QueryError> {
        if token.is_empty() {
            return Ok(None);
        }
        let (issued, after) = match (self, Cursor::decode(token)?) {
            (Self::Anomalies, Cursor::Anomalies { filter, after }) | (Self::Drift, Cursor::Drift { filter, after }) => {
                (filter, after)
            }
            (_, other) => {
                return Err(CursorError::WrongMethod { issued_by: other.method(), used_with: self.method() }.into());
            }
        };
        if &issued != filter {
            return Err(CursorError::FilterMismatch { issued: issued.to_string() }.into());
        }
        Ok(Some(after))
    }
}

/// A statement's SQL and parameters, built together so that each `$n` matches its value
/// (also for `ListPredictions`, `crate::predictions`).
#[derive(Default)]
pub(crate) struct Statement {
    pub(crate) conditions: Vec<String>,
    pub(crate) params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Statement {
    /// Adds `value` as the next parameter and returns its placeholder.
    pub(crate) fn bind(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }

    pub(crate) fn condition(&mut self, condition: String) {
        self.conditions.push(condition);
    }
}

/// Runs a keyset page statement that asks for one row more than `page_size` and converts the
/// rows: the page, and the position to continue after when another page follows. Every
/// paged list of alerts and predictions reads through it.
pub(crate) async fn fetch_page<T>(
    pool: &Pool,
    scope: &TenantScope,
    (sql, params): (String, Vec<Box<dyn ToSql + Sync + Send>>),
    page_size: usize,
    convert: fn(&Row) -> Result<(AlertPosition, T), QueryError>,
) -> Result<(Vec<T>, Option<AlertPosition>), QueryError> {
    let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
    let mut connection = pool.get().await?;
    let client = crate::db::scoped(&mut connection, scope).await?;
    let statement = client.prepare_cached(&sql).await?;
    let rows = client.query(&statement, &params).await?;
    drop(client);
    drop(connection);
    let mut items = Vec::with_capacity(rows.len().min(page_size));
    let mut last = None;
    for row in rows.iter().take(page_size) {
        let (position, item) = convert(row)?;
        items.push(item);
        last = Some(position);
    }
    Ok((items, last.filter(|_| rows.len() > page_size)))
}

/// The page statement of `table` under `filter`, after `after`, with `limit` rows at most.
fn page_statement(
    table: AlertTable,
    filter: &AlertFilter,
    after: Option<&AlertPosition>,
    limit: i64,
) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
    let mut statement = Statement::default();
    if !filter.asset_id.is_empty() {
        let p = statement.bind(filter.asset_id.clone());
        statement.condition(format!("asset_id = {p}"));
    }
    if !filter.sensor_id.is_empty() {
        let p = statement.bind(filter.sensor_id.clone());
        statement.condition(format!("sensor_id = {p}"));
    }
    if !filter.scope.is_empty() {
        let p = statement.bind(filter.scope.clone());
        statement.condition(format!("scope = {p}"));
    }
    if filter.min_severity > 1 {
        // Validated to 0..=5 before, so the cast is exact.
        let p = statement.bind(filter.min_severity as i16);
        statement.condition(format!("severity >= {p}"));
    }
    if let Some(from) = filter.from {
        let p = statement.bind(PgTimestamp(from));
        statement.condition(format!("occurred_at >= {p}"));
    }
    if let Some(to) = filter.to {
        let p = statement.bind(PgTimestamp(to));
        statement.condition(format!("occurred_at < {p}"));
    }
    if !filter.include_backfill {
        statement.condition("NOT backfill".to_owned());
    }
    if let Some(after) = after {
        // A row comparison, which the index can seek to.
        let at = statement.bind(PgTimestamp(after.occurred_at));
        let id = statement.bind(after.event_id.clone());
        statement.condition(format!("(occurred_at, event_id) < ({at}, {id})"));
    }
    let limit = statement.bind(limit);
    let mut sql = format!("SELECT {} FROM {}", table.columns(), table.name());
    if !statement.conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&statement.conditions.join(" AND "));
    }
    sql.push_str(&format!(" ORDER BY occurred_at DESC, event_id DESC LIMIT {limit}"));
    (sql, statement.params)
}

/// `[from, to)` of a list request, each bound optional.
pub(crate) fn time_range(
    from: Option<&prost_types::Timestamp>,
    to: Option<&prost_types::Timestamp>,
) -> Result<(Option<i64>, Option<i64>), QueryError> {
    let from = args::optional_time("from", from)?;
    let to = args::optional_time("to", to)?;
    if let (Some(from), Some(to)) = (from, to)
        && to <= from
    {
        return Err(QueryError::invalid("to", "must be after from (the range is [from, to))"));
    }
    Ok((from, to))
}

/// An anomaly scope filter: `sensor`, `asset`, or empty for both.
fn anomaly_scope(scope: String) -> Result<String, QueryError> {
    match scope.as_str() {
        "" | AnomalyDetected::SCOPE_SENSOR | AnomalyDetected::SCOPE_ASSET => Ok(scope),
        other => {
            let other = quote(other, QUOTE_MAX_CHARS);
            Err(QueryError::invalid("scope", format!("{other}: use sensor, asset, or leave it empty")))
        }
    }
}

/// `min_severity`: 0 to 5.
fn min_severity(value: i32) -> Result<i32, QueryError> {
    if !(0..=MAX_SEVERITY).contains(&value) {
        return Err(QueryError::invalid("min_severity", format!("{value} is not in 0..=5 (0: every anomaly)")));
    }
    Ok(value)
}

/// The envelope columns every alert table keeps.
fn origin_of(row: &Row) -> Result<AlertOrigin, tokio_postgres::Error> {
    Ok(AlertOrigin {
        event_id: row.try_get("event_id")?,
        tenant_id: row.try_get("tenant_id")?,
        asset_id: row.try_get("asset_id")?,
        occurred_at: Timestamp(row.try_get::<_, PgTimestamp>("occurred_at")?.0),
        recorded_at: Timestamp(row.try_get::<_, PgTimestamp>("recorded_at")?.0),
    })
}

fn time_of(row: &Row, column: &str) -> Result<Timestamp, tokio_postgres::Error> {
    Ok(Timestamp(row.try_get::<_, PgTimestamp>(column)?.0))
}

/// One row of `anomalies`, read back into the event it was projected from, as a message.
fn anomaly_from_row(row: &Row) -> Result<(AlertPosition, v1::Anomaly), QueryError> {
    let origin = origin_of(row)?;
    let contributing: String = row.try_get("contributing")?;
    let contributing: Vec<Contribution> = serde_json::from_str(&contributing)
        .map_err(|e| QueryError::CorruptRow { table: "anomalies", reason: format!("contributing: {e}") })?;
    let payload = AnomalyDetected {
        scope: row.try_get("scope")?,
        sensor_id: row.try_get::<_, Option<String>>("sensor_id")?.map(SensorId),
        sensor_type: row.try_get("sensor_type")?,
        detector: row.try_get("detector")?,
        score: row.try_get("score")?,
        threshold: row.try_get("threshold")?,
        severity: i32::from(row.try_get::<_, i16>("severity")?),
        value: row.try_get("value")?,
        expected_low: row.try_get("expected_low")?,
        expected_high: row.try_get("expected_high")?,
        contributing,
        triggered_by: row.try_get("triggered_by")?,
        window_start: row.try_get::<_, Option<PgTimestamp>>("window_start")?.map(|t| Timestamp(t.0)),
        backfill: row.try_get("backfill")?,
    };
    let position = AlertPosition { occurred_at: origin.occurred_at.0, event_id: origin.event_id.clone() };
    Ok((position, convert::anomaly(origin, payload)))
}

/// One row of `drift_events`, likewise.
fn drift_from_row(row: &Row) -> Result<(AlertPosition, v1::Drift), QueryError> {
    let origin = origin_of(row)?;
    let payload = DriftDetected {
        sensor_id: SensorId(row.try_get("sensor_id")?),
        sensor_type: row.try_get("sensor_type")?,
        test: row.try_get("test")?,
        statistic: row.try_get("statistic")?,
        p_value: row.try_get("p_value")?,
        psi: row.try_get("psi")?,
        reference_start: time_of(row, "reference_start")?,
        reference_end: time_of(row, "reference_end")?,
        reference_size: row.try_get("reference_size")?,
        current_start: time_of(row, "current_start")?,
        current_end: time_of(row, "current_end")?,
        current_size: row.try_get("current_size")?,
        backfill: row.try_get("backfill")?,
    };
    let position = AlertPosition { occurred_at: origin.occurred_at.0, event_id: origin.event_id.clone() };
    Ok((position, convert::drift(origin, payload)))
}

/// What one `StreamAlerts` call asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFilter {
    /// The caller's tenants: a stream never carries another tenant's alert.
    pub tenants: TenantScope,
    pub asset_id: String,
    pub sensor_id: String,
    pub min_severity: i32,
    pub include_stale: bool,
}

impl StreamFilter {
    /// Validates a request.
    pub fn new(tenants: TenantScope, request: v1::StreamAlertsRequest) -> Result<Self, QueryError> {
        Ok(Self {
            tenants,
            asset_id: request.asset_id,
            sensor_id: request.sensor_id,
            min_severity: min_severity(request.min_severity)?,
            include_stale: request.include_stale,
        })
    }

    /// Whether this stream wants `alert`. Backfill never gets here (the feed drops it).
    pub fn matches(&self, alert: &v1::Alert) -> bool {
        use v1::alert::Kind;
        let Some(kind) = &alert.kind else { return false };
        let (tenant_id, asset_id, sensor_id) = match kind {
            Kind::Anomaly(a) => (&a.tenant_id, &a.asset_id, &a.sensor_id),
            Kind::Drift(d) => (&d.tenant_id, &d.asset_id, &d.sensor_id),
            Kind::SensorStale(s) => (&s.tenant_id, &s.asset_id, &s.sensor_id),
            Kind::RetrainRequest(r) => (&r.tenant_id, &r.asset_id, &r.sensor_id),
        };
        if let TenantScope::One(tenant) = &self.tenants
            && tenant.as_str() != tenant_id
        {
            return false;
        }
        if (!self.asset_id.is_empty() && *asset_id != self.asset_id)
            || (!self.sensor_id.is_empty() && *sensor_id != self.sensor_id)
        {
            return false;
        }
        match kind {
            Kind::Anomaly(a) => a.severity >= self.min_severity,
            Kind::SensorStale(_) => self.include_stale,
            Kind::Drift(_) | Kind::RetrainRequest(_) => true,
        }
    }
}

/// The alerts of `subscription` that pass `filter`, until an error ends the stream (sent to
/// the client as the stream's final status).
fn alert_stream(subscription: Subscription, filter: StreamFilter) -> AlertStream {
    Box::pin(futures::stream::unfold(Some(subscription), move |state| {
        let filter = filter.clone();
        async move {
            let mut subscription = state?;
            loop {
                match subscription.next().await {
                    Ok(alert) if filter.matches(&alert) => {
                        return Some((Ok(v1::Alert::clone(&alert)), Some(subscription)));
                    }
                    Ok(_) => continue,
                    Err(error) => return Some((Err(Status::from(error)), None)),
                }
            }
        }
    }))
}

/// The `AlertService` implementation.
#[derive(Clone)]
pub struct Alerts {
    pool: Pool,
    settings: Arc<QuerySettings>,
    feed: AlertFeed,
}

impl Alerts {
    pub fn new(pool: Pool, settings: Arc<QuerySettings>, feed: AlertFeed) -> Self {
        Self { pool, settings, feed }
    }

    /// One page of `table` under `filter`: the converted rows and the next page token.
    async fn page<T>(
        &self,
        scope: &TenantScope,
        table: AlertTable,
        filter: AlertFilter,
        page_size: i32,
        page_token: &str,
        convert: fn(&Row) -> Result<(AlertPosition, T), QueryError>,
    ) -> Result<(Vec<T>, String), QueryError> {
        let page_size = args::page_size(page_size, &self.settings)?;
        let after = table.continue_from(page_token, &filter)?;
        // One row more than the page tells whether another page follows, without a count.
        let statement = page_statement(table, &filter, after.as_ref(), page_size as i64 + 1);
        let (items, next) = fetch_page(&self.pool, scope, statement, page_size, convert).await?;
        let next_page_token = next.map(|after| table.cursor(filter, after).encode()).unwrap_or_default();
        Ok((items, next_page_token))
    }

    async fn list_anomalies_page(
        &self,
        tenants: &TenantScope,
        request: v1::ListAnomaliesRequest,
    ) -> Result<v1::ListAnomaliesResponse, QueryError> {
        let (from, to) = time_range(request.from.as_ref(), request.to.as_ref())?;
        let scope = anomaly_scope(request.scope)?;
        let filter = AlertFilter {
            asset_id: request.asset_id,
            sensor_id: request.sensor_id,
            scope,
            min_severity: min_severity(request.min_severity)?,
            from,
            to,
            include_backfill: request.include_backfill,
        };
        let (anomalies, next_page_token) = self
            .page(tenants, AlertTable::Anomalies, filter, request.page_size, &request.page_token, anomaly_from_row)
            .await?;
        Ok(v1::ListAnomaliesResponse { anomalies, next_page_token })
    }

    async fn list_drift_page(
        &self,
        scope: &TenantScope,
        request: v1::ListDriftRequest,
    ) -> Result<v1::ListDriftResponse, QueryError> {
        let (from, to) = time_range(request.from.as_ref(), request.to.as_ref())?;
        let filter = AlertFilter {
            asset_id: request.asset_id,
            sensor_id: request.sensor_id,
            from,
            to,
            include_backfill: request.include_backfill,
            ..AlertFilter::default()
        };
        let (drift, next_page_token) =
            self.page(scope, AlertTable::Drift, filter, request.page_size, &request.page_token, drift_from_row).await?;
        Ok(v1::ListDriftResponse { drift, next_page_token })
    }

    async fn open_stream(
        &self,
        scope: &TenantScope,
        request: v1::StreamAlertsRequest,
    ) -> Result<AlertStream, QueryError> {
        let filter = StreamFilter::new(scope.clone(), request)?;
        let subscription = self.feed.subscribe()?;
        Ok(alert_stream(subscription, filter))
    }
}

#[tonic::async_trait]
impl AlertService for Alerts {
    async fn list_anomalies(
        &self,
        request: Request<v1::ListAnomaliesRequest>,
    ) -> Result<Response<v1::ListAnomaliesResponse>, Status> {
        observe("ListAnomalies", async move {
            let scope = crate::auth::tenants(&request)?;
            self.list_anomalies_page(&scope, request.into_inner()).await
        })
        .await
    }

    async fn list_drift(
        &self,
        request: Request<v1::ListDriftRequest>,
    ) -> Result<Response<v1::ListDriftResponse>, Status> {
        observe("ListDrift", async move {
            let scope = crate::auth::tenants(&request)?;
            self.list_drift_page(&scope, request.into_inner()).await
        })
        .await
    }

    type StreamAlertsStream = AlertStream;

    async fn stream_alerts(&self, request: Request<v1::StreamAlertsRequest>) -> Result<Response<AlertStream>, Status> {
        observe("StreamAlerts", async move {
            let scope = crate::auth::tenants(&request)?;
            self.open_stream(&scope, request.into_inner()).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anomaly(asset: &str, sensor: &str, severity: i32) -> v1::Alert {
        v1::Alert {
            kind: Some(v1::alert::Kind::Anomaly(v1::Anomaly {
                asset_id: asset.into(),
                sensor_id: sensor.into(),
                severity,
                ..Default::default()
            })),
        }
    }

    fn stale(asset: &str) -> v1::Alert {
        v1::Alert {
            kind: Some(v1::alert::Kind::SensorStale(v1::SensorStale {
                asset_id: asset.into(),
                sensor_id: format!("{asset}.t"),
                ..Default::default()
            })),
        }
    }

    fn drift(asset: &str) -> v1::Alert {
        v1::Alert {
            kind: Some(v1::alert::Kind::Drift(v1::Drift {
                asset_id: asset.into(),
                sensor_id: format!("{asset}.t"),
                ..Default::default()
            })),
        }
    }

    fn filter(asset: &str, sensor: &str, min_severity: i32, include_stale: bool) -> StreamFilter {
        StreamFilter::new(
            TenantScope::All,
            v1::StreamAlertsRequest { asset_id: asset.into(), sensor_id: sensor.into(), min_severity, include_stale },
        )
        .unwrap()
    }

    #[test]
    fn stream_filters_apply_to_every_kind_and_severity_only_to_anomalies() {
        let all = filter("", "", 0, false);
        assert!(all.matches(&anomaly("p", "p.t", 1)) && all.matches(&drift("p")));
        assert!(!all.matches(&stale("p")), "stale sensors only on request");
        assert!(filter("", "", 0, true).matches(&stale("p")));

        let severe = filter("p", "", 3, false);
        assert!(severe.matches(&anomaly("p", "p.t", 3)));
        assert!(!severe.matches(&anomaly("p", "p.t", 2)));
        assert!(!severe.matches(&anomaly("q", "q.t", 5)), "another asset");
        assert!(severe.matches(&drift("p")), "drift has no severity");

        let sensor = filter("", "p.t", 0, true);
        assert!(sensor.matches(&anomaly("p", "p.t", 1)) && sensor.matches(&stale("p")));
        assert!(!sensor.matches(&anomaly("p", "", 4)), "asset-scope anomalies have no sensor");
        assert!(!all.matches(&v1::Alert { kind: None }));
    }

    #[test]
    fn a_stream_of_one_tenant_never_carries_another_tenants_alert() {
        let of = |tenant: &str| v1::Alert {
            kind: Some(v1::alert::Kind::Drift(v1::Drift {
                tenant_id: tenant.into(),
                asset_id: "p".into(),
                ..Default::default()
            })),
        };
        let acme = StreamFilter::new(TenantScope::parse("acme"), v1::StreamAlertsRequest::default()).unwrap();
        assert!(acme.matches(&of("acme")));
        assert!(!acme.matches(&of("globex")) && !acme.matches(&of("")));
        assert!(filter("", "", 0, false).matches(&of("globex")), "every tenant's stream");
    }

    #[test]
    fn scopes_other_than_sensor_or_asset_are_refused_quoted_short() {
        for scope in ["", "sensor", "asset"] {
            assert_eq!(anomaly_scope(scope.into()).unwrap(), scope);
        }
        let status = Status::from(anomaly_scope("sensors".into()).unwrap_err());
        assert!(status.message().starts_with("scope: \"sensors\": use sensor, asset"), "{}", status.message());
        let status = Status::from(anomaly_scope("s".repeat(100_000)).unwrap_err());
        assert!(status.message().len() < 200 && status.message().contains("99936 bytes cut"), "{}", status.message());
    }

    #[test]
    fn severities_outside_zero_to_five_are_refused() {
        let request = |min_severity| v1::StreamAlertsRequest { min_severity, ..Default::default() };
        assert!(StreamFilter::new(TenantScope::All, request(5)).is_ok());
        for bad in [-1, 6] {
            let status = Status::from(StreamFilter::new(TenantScope::All, request(bad)).unwrap_err());
            assert!(status.message().starts_with("min_severity:"), "{}", status.message());
        }
    }

    #[test]
    fn page_statements_hold_only_the_filters_set_and_number_their_parameters() {
        let (sql, params) = page_statement(AlertTable::Drift, &AlertFilter::default(), None, 101);
        assert!(
            sql.ends_with("FROM drift_events WHERE NOT backfill ORDER BY occurred_at DESC, event_id DESC LIMIT $1")
        );
        assert_eq!(params.len(), 1);

        let filter = AlertFilter {
            asset_id: "p".into(),
            scope: "sensor".into(),
            min_severity: 3,
            from: Some(1),
            include_backfill: true,
            ..AlertFilter::default()
        };
        let after = AlertPosition { occurred_at: 5, event_id: "e".into() };
        let (sql, params) = page_statement(AlertTable::Anomalies, &filter, Some(&after), 11);
        let conditions = "WHERE asset_id = $1 AND scope = $2 AND severity >= $3 AND occurred_at >= $4 \
                          AND (occurred_at, event_id) < ($5, $6) ORDER BY occurred_at DESC, event_id DESC LIMIT $7";
        assert!(sql.ends_with(conditions), "{sql}");
        assert!(!sql.contains("backfill AND") && !sql.contains("NOT backfill"));
        assert_eq!(params.len(), 7);
    }

    #[test]
    fn tokens_of_the_other_list_or_other_filters_are_refused() {
        let filter = AlertFilter { asset_id: "p".into(), ..AlertFilter::default() };
        let after = AlertPosition { occurred_at: 5, event_id: "e".into() };
        let token = AlertTable::Drift.cursor(filter.clone(), after.clone()).encode();
        assert_eq!(AlertTable::Drift.continue_from(&token, &filter).unwrap(), Some(after));
        let error = Status::from(AlertTable::Anomalies.continue_from(&token, &filter).unwrap_err());
        assert!(error.message().contains("issued by ListDrift, not ListAnomalies"), "{}", error.message());
        let other = AlertFilter { include_backfill: true, ..filter };
        let error = Status::from(AlertTable::Drift.continue_from(&token, &other).unwrap_err());
        assert!(error.message().contains("other filters"), "{}", error.message());
        assert_eq!(AlertTable::Drift.continue_from("", &other).unwrap(), None);
    }
}
