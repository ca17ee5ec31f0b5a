//! `sm.v1.AssetService`: the asset registry, read from the projector's `assets` and
//! `sensors` tables, and `RegisterAsset`, the one command here, which becomes an
//! `AssetRegistered` event on `sm.assets.v1`.
//!
//! The service never writes the tables itself: Kafka is the system of record, and the
//! projector applies the event like any other. So a registration is visible to `GetAsset`
//! only after the projector has caught up (eventual consistency, stated in the proto).
//! `RegisterAsset` answers once the broker has acknowledged the event (acks=all with an
//! idempotent producer), so an OK means the registration is durable.

use crate::QuerySettings;
use crate::args;
use crate::cursor::{Cursor, CursorError};
use crate::db::PgTimestamp;
use crate::error::QueryError;
use crate::metrics::observe;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sm_domain::units::{SENSOR_TYPES, canonical_unit};
use sm_domain::{AssetId, AssetRegistered, Codec, Envelope, QUOTE_MAX_CHARS, SensorSpec, TenantId, Timestamp, quote};
use sm_identity::{Principal, TenantScope};
use sm_kafka::trace::{TRACEPARENT, TraceParent};
use sm_proto::convert::to_timestamp;
use sm_proto::v1::{self, asset_service_server::AssetService};
use sm_storage::Pool;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::Row;
use tonic::{Request, Response, Status};

/// `producer` of the events this service writes.
pub const PRODUCER: &str = "query";
/// Tenant of a registration that names none (as for gateway JSON).
pub const DEFAULT_TENANT: &str = "default";

/// A page of assets with their sensors, in one statement (one snapshot, so an asset and its
/// sensors always agree). The first page passes `''`, which sorts before every valid id.
const LIST: &str = "
    WITH page AS (
        SELECT asset_id, tenant_id, name, asset_type, site, registered_at, updated_at
        FROM assets
        WHERE asset_id > $1
        ORDER BY asset_id
        LIMIT $2
    )
    SELECT page.asset_id, page.tenant_id, page.name, page.asset_type, page.site, page.registered_at,
           page.updated_at, s.sensor_id, s.sensor_type, s.unit, s.min_value, s.max_value, s.expected_interval_ms
    FROM page LEFT JOIN sensors s ON s.asset_id = page.asset_id
    ORDER BY page.asset_id, s.sensor_id";
const GET: &str = "
    SELECT a.asset_id, a.tenant_id, a.name, a.asset_type, a.site, a.registered_at, a.updated_at,
           s.sensor_id, s.sensor_type, s.unit, s.min_value, s.max_value, s.expected_interval_ms
    FROM assets a LEFT JOIN sensors s ON s.asset_id = a.asset_id
    WHERE a.asset_id = $1
    ORDER BY s.sensor_id";

/// Publishes registrations: an idempotent producer, and how long to wait for the broker.
pub struct Publisher {
    producer: FutureProducer,
    codec: Codec,
    topic: String,
    timeout: Duration,
}

impl Publisher {
    /// Builds the producer (`KafkaConfig::idempotent_producer_config`, so acks=all and no
    /// duplicates from librdkafka's retries). It connects lazily.
    pub fn new(kafka: &sm_kafka::KafkaConfig, settings: &QuerySettings) -> Result<Self, crate::ServeError> {
        let producer = kafka
            .idempotent_producer_config()
            .set("message.timeout.ms", settings.publish_timeout_ms.to_string())
            // Statistics feed the consumer-lag metric of agents; a lone producer has no use
            // for them, and librdkafka's default context would log each report.
            .set("statistics.interval.ms", "0")
            .create()
            .map_err(crate::ServeError::Producer)?;
        Ok(Self {
            producer,
            codec: Codec::embedded()?,
            topic: settings.assets_topic.clone(),
            timeout: Duration::from_millis(settings.publish_timeout_ms),
        })
    }

    /// Publishes one event keyed by its asset id and waits for the acknowledgement. It starts
    /// a trace (`traceparent`), as a gateway does for a reading.
    async fn publish(&self, event: &Envelope<AssetRegistered>) -> Result<(), QueryError> {
        let value = self.codec.encode(event)?;
        let traceparent = TraceParent::new_root().header_value();
        let headers = OwnedHeaders::new_with_capacity(1).insert(Header { key: TRACEPARENT, value: Some(&traceparent) });
        let record = FutureRecord::to(&self.topic).key(event.header.asset_id.as_str()).payload(&value).headers(headers);
        // The queue timeout only bounds waiting for room in librdkafka's queue; delivery is
        // bounded by message.timeout.ms.
        self.producer
            .send(record, self.timeout)
            .await
            .map_err(|(source, _)| QueryError::Publish { topic: self.topic.clone(), source })?;
        Ok(())
    }
}

/// Who holds an asset id, whichever tenant it is.
const OWNER: &str = "SELECT tenant_id FROM assets WHERE asset_id = $1";

/// A registration that passed validation: what goes into the event.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub tenant_id: TenantId,
    pub asset_id: AssetId,
    pub asset: AssetRegistered,
}

/// Checks a `RegisterAsset` request against the registry's rules. Sensors come out sorted by
/// id, as `GetAsset` lists them, so an event does not depend on the client's order.
pub fn validate_registration(request: v1::RegisterAssetRequest) -> Result<Registration, QueryError> {
    check_id("asset_id", &request.asset_id)?;
    let tenant_id = match request.tenant_id.as_str() {
        "" => DEFAULT_TENANT.to_owned(),
        tenant => {
            check_id("tenant_id", tenant)?;
            tenant.to_owned()
        }
    };
    let mut seen = HashSet::new();
    let mut sensors = Vec::with_capacity(request.sensors.len());
    for (i, sensor) in request.sensors.into_iter().enumerate() {
        let field = |name: &str| format!("sensors[{i}].{name}");
        check_id(&field("sensor_id"), &sensor.sensor_id)?;
        if !seen.insert(sensor.sensor_id.clone()) {
            return Err(QueryError::invalid(
                field("sensor_id"),
                format!("{} is listed twice; sensor ids must be unique", quote(&sensor.sensor_id, QUOTE_MAX_CHARS)),
            ));
        }
        let Some(canonical) = canonical_unit(&sensor.sensor_type) else {
            let known: Vec<&str> = SENSOR_TYPES.iter().map(|(t, _)| *t).collect();
            return Err(QueryError::invalid(
                field("sensor_type"),
                format!(
                    "unknown type {}; use one of {}",
                    quote(&sensor.sensor_type, QUOTE_MAX_CHARS),
                    known.join(", ")
                ),
            ));
        };
        if sensor.unit != canonical {
            return Err(QueryError::invalid(
                field("unit"),
                format!(
                    "{} is not the canonical unit of {}; register {canonical} (ingestion converts readings sent in other units)",
                    quote(&sensor.unit, QUOTE_MAX_CHARS),
                    sensor.sensor_type
                ),
            ));
        }
        if !sensor.min_value.is_finite() || !sensor.max_value.is_finite() || sensor.min_value >= sensor.max_value {
            return Err(QueryError::invalid(
                field("max_value"),
                format!(
                    "min_value {} and max_value {} must be finite with min_value < max_value",
                    sensor.min_value, sensor.max_value
                ),
            ));
        }
        if sensor.expected_interval_ms <= 0 {
            return Err(QueryError::invalid(
                field("expected_interval_ms"),
                format!("{} must be positive: how often the sensor reports, in ms", sensor.expected_interval_ms),
            ));
        }
        sensors.push(SensorSpec::from(sensor));
    }
    sensors.sort_by(|a, b| a.sensor_id.cmp(&b.sensor_id));
    Ok(Registration {
        tenant_id: TenantId(tenant_id),
        asset_id: AssetId(request.asset_id),
        asset: AssetRegistered { name: request.name, asset_type: request.asset_type, site: request.site, sensors },
    })
}

/// Ids are keys everywhere (Kafka keys, primary keys, metric-free logs): not empty, and no
/// surrounding whitespace, which would make two ids look the same to a person.
pub(crate) fn check_id(field: &str, id: &str) -> Result<(), QueryError> {
    if id.is_empty() {
        return Err(QueryError::invalid(field, "is required"));
    }
    if id.trim() != id || id.chars().any(char::is_control) {
        return Err(QueryError::invalid(
            field,
            format!("{} has surrounding whitespace or control characters", quote(id, QUOTE_MAX_CHARS)),
        ));
    }
    Ok(())
}

/// The `AssetService` implementation.
pub struct Assets {
    pool: Pool,
    settings: Arc<QuerySettings>,
    publisher: Publisher,
}

impl Assets {
    pub fn new(pool: Pool, settings: Arc<QuerySettings>, publisher: Publisher) -> Self {
        Self { pool, settings, publisher }
    }

    async fn page(
        &self,
        scope: &TenantScope,
        request: v1::ListAssetsRequest,
    ) -> Result<v1::ListAssetsResponse, QueryError> {
        let page_size = args::page_size(request.page_size, &self.settings)?;
        let after = match request.page_token.as_str() {
            "" => String::new(),
            token => match Cursor::decode(token)? {
                Cursor::Assets { after_asset_id } => after_asset_id,
                other => {
                    return Err(CursorError::WrongMethod { issued_by: other.method(), used_with: "ListAssets" }.into());
                }
            },
        };
        let mut connection = self.pool.get().await?;
        let client = crate::db::scoped(&mut connection, scope).await?;
        let statement = client.prepare_cached(LIST).await?;
        let rows = client.query(&statement, &[&after, &(page_size as i64 + 1)]).await?;
        drop(client);
        drop(connection);
        let mut assets = assets_from_rows(&rows)?;
        let next_page_token = if assets.len() > page_size {
            assets.truncate(page_size);
            Cursor::Assets { after_asset_id: assets[page_size - 1].asset_id.clone() }.encode()
        } else {
            String::new()
        };
        Ok(v1::ListAssetsResponse { assets, next_page_token })
    }

    async fn get(&self, scope: &TenantScope, request: v1::GetAssetRequest) -> Result<v1::GetAssetResponse, QueryError> {
        if request.asset_id.is_empty() {
            return Err(QueryError::invalid("asset_id", "is required"));
        }
        let mut connection = self.pool.get().await?;
        let client = crate::db::scoped(&mut connection, scope).await?;
        let statement = client.prepare_cached(GET).await?;
        let rows = client.query(&statement, &[&request.asset_id]).await?;
        drop(client);
        drop(connection);
        match assets_from_rows(&rows)?.pop() {
            Some(asset) => Ok(v1::GetAssetResponse { asset: Some(asset) }),
            None => Err(QueryError::AssetNotFound(request.asset_id)),
        }
    }

    async fn register(
        &self,
        principal: &Principal,
        mut request: v1::RegisterAssetRequest,
    ) -> Result<v1::RegisterAssetResponse, QueryError> {
        // The tenant is the caller's; only a cross-tenant admin names one (else the default).
        request.tenant_id = match crate::auth::scope(principal, &request.tenant_id)? {
            TenantScope::One(tenant) => tenant.0,
            TenantScope::All => String::new(),
        };
        let registration = validate_registration(request)?;
        // Asset ids are global keys: an id another tenant holds is not taken over.
        let mut connection = self.pool.get().await?;
        let client = crate::db::scoped(&mut connection, &TenantScope::All).await?;
        let owner = client.query_opt(OWNER, &[&registration.asset_id.0]).await?;
        drop(client);
        drop(connection);
        if let Some(owner) = owner
            && owner.try_get::<_, &str>(0)? != registration.tenant_id.as_str()
        {
            return Err(QueryError::PermissionDenied(format!(
                "asset_id: {} is another tenant's asset; choose another id",
                quote(&registration.asset_id.0, QUOTE_MAX_CHARS)
            )));
        }
        let event = Envelope::origin(
            registration.tenant_id,
            registration.asset_id,
            Timestamp::now(),
            PRODUCER,
            registration.asset,
        );
        self.publisher.publish(&event).await?;
        tracing::info!(
            asset_id = %event.header.asset_id,
            event_id = %event.header.event_id,
            sensors = event.payload.sensors.len(),
            "asset registration published"
        );
        let (header, payload) = (event.header, event.payload);
        // The projector stamps registered_at/updated_at with the event's recorded_at.
        let at = Some(to_timestamp(header.recorded_at));
        let asset = v1::Asset {
            asset_id: header.asset_id.0,
            tenant_id: header.tenant_id.0,
            name: payload.name,
            asset_type: payload.asset_type,
            site: payload.site,
            sensors: payload.sensors.into_iter().map(v1::Sensor::from).collect(),
            registered_at: at,
            updated_at: at,
        };
        Ok(v1::RegisterAssetResponse { asset: Some(asset), event_id: header.event_id.to_string() })
    }
}

/// Folds `asset LEFT JOIN sensors` rows, ordered by asset id, into assets with their sensors.
fn assets_from_rows(rows: &[Row]) -> Result<Vec<v1::Asset>, tokio_postgres::Error> {
    let mut assets: Vec<v1::Asset> = Vec::new();
    for row in rows {
        let asset_id: String = row.try_get("asset_id")?;
        if assets.last().is_none_or(|a| a.asset_id != asset_id) {
            let time = |column: &str| -> Result<_, tokio_postgres::Error> {
                Ok(row.try_get::<_, Option<PgTimestamp>>(column)?.map(|t| to_timestamp(Timestamp(t.0))))
            };
            assets.push(v1::Asset {
                asset_id,
                tenant_id: row.try_get("tenant_id")?,
                name: row.try_get("name")?,
                asset_type: row.try_get("asset_type")?,
                site: row.try_get("site")?,
                sensors: Vec::new(),
                registered_at: time("registered_at")?,
                updated_at: time("updated_at")?,
            });
        }
        // NULL sensor columns: an asset without sensors (the outer join's empty side).
        if let Some(sensor_id) = row.try_get::<_, Option<String>>("sensor_id")? {
            let asset = assets.last_mut().expect("pushed above");
            asset.sensors.push(v1::Sensor {
                sensor_id,
                sensor_type: row.try_get("sensor_type")?,
                unit: row.try_get("unit")?,
                min_value: row.try_get("min_value")?,
                max_value: row.try_get("max_value")?,
                expected_interval_ms: row.try_get("expected_interval_ms")?,
            });
        }
    }
    Ok(assets)
}

#[tonic::async_trait]
impl AssetService for Assets {
    async fn list_assets(
        &self,
        request: Request<v1::ListAssetsRequest>,
    ) -> Result<Response<v1::ListAssetsResponse>, Status> {
        observe("ListAssets", async move {
            let scope = crate::auth::tenants(&request)?;
            self.page(&scope, request.into_inner()).await
        })
        .await
    }

    async fn get_asset(&self, request: Request<v1::GetAssetRequest>) -> Result<Response<v1::GetAssetResponse>, Status> {
        observe("GetAsset", async move {
            let scope = crate::auth::tenants(&request)?;
            self.get(&scope, request.into_inner()).await
        })
        .await
    }

    async fn register_asset(
        &self,
        request: Request<v1::RegisterAssetRequest>,
    ) -> Result<Response<v1::RegisterAssetResponse>, Status> {
        observe("RegisterAsset", async move {
            let principal = crate::auth::principal(&request)?.clone();
            self.register(&principal, request.into_inner()).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sensor(id: &str, sensor_type: &str, unit: &str) -> v1::Sensor {
        v1::Sensor {
            sensor_id: id.into(),
            sensor_type: sensor_type.into(),
            unit: unit.into(),
            min_value: -10.0,
            max_value: 200.0,
            expected_interval_ms: 1000,
        }
    }

    fn request() -> v1::RegisterAssetRequest {
        v1::RegisterAssetRequest {
            asset_id: "pump-7".into(),
            name: "Feed pump 7".into(),
            asset_type: "pump".into(),
            site: "plant-a".into(),
            sensors: vec![sensor("pump-7.vib", "vibration_rms", "mm/s"), sensor("pump-7.temp", "temperature", "degC")],
            tenant_id: String::new(),
        }
    }

    fn refused(request: v1::RegisterAssetRequest) -> String {
        let status = Status::from(validate_registration(request).unwrap_err());
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        status.message().to_owned()
    }

    #[test]
    fn a_valid_registration_becomes_the_event_payload_with_sorted_sensors() {
        let registration = validate_registration(request()).unwrap();
        assert_eq!(registration.tenant_id.as_str(), DEFAULT_TENANT);
        assert_eq!(registration.asset_id.as_str(), "pump-7");
        assert_eq!(registration.asset.name, "Feed pump 7");
        let ids: Vec<&str> = registration.asset.sensors.iter().map(|s| s.sensor_id.as_str()).collect();
        assert_eq!(ids, ["pump-7.temp", "pump-7.vib"]);
        assert_eq!(registration.asset.sensors[1].unit, "mm/s");
    }

    #[test]
    fn ids_must_be_present_and_clean() {
        assert_eq!(refused(v1::RegisterAssetRequest { asset_id: String::new(), ..request() }), "asset_id: is required");
        assert!(refused(v1::RegisterAssetRequest { asset_id: " pump".into(), ..request() }).starts_with("asset_id:"));
        let mut r = request();
        r.sensors[1].sensor_id = String::new();
        assert_eq!(refused(r), "sensors[1].sensor_id: is required");
        assert!(refused(v1::RegisterAssetRequest { tenant_id: "a\n".into(), ..request() }).starts_with("tenant_id:"));
    }

    #[test]
    fn what_the_client_sent_is_quoted_short() {
        let huge = "x".repeat(100_000);
        let mut requests = vec![v1::RegisterAssetRequest { asset_id: format!(" {huge}"), ..request() }];
        let mut r = request();
        r.sensors = vec![sensor(&huge, "temperature", "degC"), sensor(&huge, "temperature", "degC")];
        requests.push(r);
        let mut r = request();
        r.sensors[0].sensor_type = huge.clone();
        requests.push(r);
        let mut r = request();
        r.sensors[0].unit = huge.clone();
        requests.push(r);
        for request in requests {
            let message = refused(request);
            assert!(message.len() < 400 && message.contains("bytes cut"), "{message}");
        }
    }

    #[test]
    fn duplicate_sensor_ids_are_refused() {
        let mut r = request();
        r.sensors.push(sensor("pump-7.temp", "temperature", "degC"));
        assert!(refused(r).starts_with("sensors[2].sensor_id: \"pump-7.temp\" is listed twice"));
    }

    #[test]
    fn unknown_sensor_types_list_the_known_ones() {
        let mut r = request();
        r.sensors[0].sensor_type = "humidity".into();
        let message = refused(r);
        assert!(message.starts_with("sensors[0].sensor_type: unknown type \"humidity\""), "{message}");
        assert!(message.contains("temperature, vibration_rms, pressure"), "{message}");
    }

    #[test]
    fn units_must_be_canonical_and_the_error_says_which() {
        let mut r = request();
        r.sensors[1].unit = "degF".into();
        let message = refused(r);
        assert!(
            message.starts_with("sensors[1].unit: \"degF\" is not the canonical unit of temperature; register degC")
        );
    }

    #[test]
    fn limits_must_be_ordered_and_finite_and_the_interval_positive() {
        for (min, max) in [(5.0, 5.0), (6.0, 5.0), (f64::NAN, 1.0), (0.0, f64::INFINITY)] {
            let mut r = request();
            r.sensors[0].min_value = min;
            r.sensors[0].max_value = max;
            assert!(refused(r).starts_with("sensors[0].max_value:"), "{min} {max}");
        }
        let mut r = request();
        r.sensors[0].expected_interval_ms = 0;
        assert!(refused(r).starts_with("sensors[0].expected_interval_ms: 0 must be positive"));
    }

    #[test]
    fn an_asset_without_sensors_is_allowed() {
        let registration = validate_registration(v1::RegisterAssetRequest { sensors: vec![], ..request() }).unwrap();
        assert!(registration.asset.sensors.is_empty());
    }
}
