//! Identity and tenancy against the real local stack: every RPC of the permission table is
//! called without credentials, with a role that lacks its permission, from another tenant
//! and from its own; keys are created and revoked through `KeyService` (events on a topic of
//! the test's own, projected by the real identity projection); row-level security is read
//! as the query role directly.
//!
//! The stack must be up (`deploy/local/stack up`); a missing stack is a panic, never a skip.

mod common;

use http::uri::PathAndQuery;
use sm_kafka::{KafkaConfig, Runtime};
use sm_projector::identity::IdentityProjection;
use sm_proto::auth::AuthChannel;
use sm_proto::v1;
use sm_proto::{
    AlertServiceClient, AnomalyServiceClient, AssetServiceClient, DriftServiceClient, KeyServiceClient,
    ModelServiceClient, PredictionServiceClient, ReadingServiceClient,
};
use sm_query::auth::PERMISSIONS;
use sm_query::{QueryConfig, QuerySettings};
use sm_storage::{Flavor, Pool, PostgresConfig, ProjectionWriter};
use sm_telemetry::Secret;
use sm_testkit::postgres::ScratchSchema;
use sm_testkit::{Stack, stack_from_env_file, unique};
use std::time::{Duration, Instant};
use tonic::Code;

const SECOND: i64 = 1_000_000;
/// 2025-11-24T16:00:00Z.
const T0: i64 = 1_764_000_000 * SECOND;
const ACME: &str = "acme";
const GLOBEX: &str = "globex";
const ACME_ASSET: &str = "acme-pump-1";
const ACME_SENSOR: &str = "acme-pump-1.temp";
const GLOBEX_ASSET: &str = "globex-fan-1";

struct Fixture {
    stack: Stack,
    config: QueryConfig,
    pool: Pool,
    server: common::Server,
    stop_projection: Option<tokio::sync::oneshot::Sender<()>>,
    schema: ScratchSchema,
}

impl Fixture {
    async fn start() -> Self {
        let stack = stack_from_env_file();
        let schema = ScratchSchema::create(&stack, "sm_auth_test").await;
        let postgres = PostgresConfig { url: Secret(schema.url.clone()), pool_size: 4, ..Default::default() };
        let pool = sm_storage::connect(&postgres).unwrap();
        let flavor = sm_storage::migrate(&pool, sm_projector::schema::COMPONENT, sm_projector::schema::MIGRATIONS)
            .await
            .unwrap();
        if flavor == Flavor::Native {
            pool.get()
                .await
                .unwrap()
                .batch_execute("CREATE TABLE readings_default PARTITION OF readings DEFAULT")
                .await
                .unwrap();
        }
        let identity_topic = unique("sm.identity.test");
        let kafka = KafkaConfig { bootstrap_servers: stack.kafka.clone(), ..KafkaConfig::default() };
        let assets_topic = unique("sm.assets.test");
        sm_kafka::ensure_topics(&kafka, &[(&identity_topic, true), (&assets_topic, true)]).await.unwrap();

        // The real identity projection, as the projector runs it.
        let projection = Runtime::new(
            KafkaConfig { group_id: unique("g"), session_timeout_ms: 6000, ..kafka.clone() },
            "projector-identity-test",
            &[&identity_topic],
            &format!("{identity_topic}-dlq"),
        )
        .unwrap();
        let (stop_projection, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(projection.run_projection(ProjectionWriter::new(pool.clone(), IdentityProjection), async {
            let _ = stopped.await;
        }));

        let config = QueryConfig {
            kafka,
            postgres,
            telemetry: Default::default(),
            artifacts: Default::default(),
            query: QuerySettings { assets_topic, models_topic: unique("sm.models.test"), ..QuerySettings::default() },
            auth: sm_query::auth::AuthConfig { identity_topic, ..common::auth(&stack) },
        };
        config.validate().unwrap();
        let server = common::Server::start(&config, &schema).await;
        let fixture = Self { stack, config, pool, server, stop_projection: Some(stop_projection), schema };
        fixture.insert_tenant_data().await;
        fixture
    }

    /// A new key of `tenant` with `role`, created by the bootstrap admin through `KeyService`.
    async fn key(&self, tenant: &str, role: &str) -> String {
        let created = KeyServiceClient::new(self.server.channel().await)
            .create_key(v1::CreateKeyRequest {
                name: format!("{tenant} {role}"),
                roles: vec![role.into()],
                tenant_id: tenant.into(),
                expires_at: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(created.key.as_ref().unwrap().tenant_id, tenant);
        created.api_key
    }

    /// Acme: an asset with a sensor, 120 readings over two hours, latest values, an anomaly,
    /// a drift finding and a prediction. Globex: one asset. Written as the projector writes.
    async fn insert_tenant_data(&self) {
        let client = self.pool.get().await.unwrap();
        client
            .batch_execute(&format!(
                "INSERT INTO assets (asset_id, tenant_id, name, asset_type, site, registered_at, updated_at) VALUES
                     ('{ACME_ASSET}', '{ACME}', 'Pump 1', 'pump', 'plant-a', now(), now()),
                     ('{GLOBEX_ASSET}', '{GLOBEX}', 'Fan 1', 'fan', 'plant-g', now(), now());
                 INSERT INTO sensors (sensor_id, asset_id, sensor_type, unit, min_value, max_value, expected_interval_ms)
                 VALUES ('{ACME_SENSOR}', '{ACME_ASSET}', 'temperature', 'degC', -50, 200, 60000);
                 INSERT INTO readings (tenant_id, asset_id, sensor_id, sensor_type, occurred_at, value, unit, sequence,
                                       quality_flags, backfill, event_id, recorded_at)
                 SELECT '{ACME}', '{ACME_ASSET}', '{ACME_SENSOR}', 'temperature',
                        to_timestamp({t0}) + i * interval '1 minute', 20 + (i % 7), 'degC', i, '{{}}', false,
                        'r-' || i, to_timestamp({t0}) + i * interval '1 minute'
                 FROM generate_series(0, 119) AS i;
                 INSERT INTO latest_readings (sensor_id, tenant_id, asset_id, sensor_type, occurred_at, value, unit,
                                              sequence, quality_flags, backfill, event_id)
                 VALUES ('{ACME_SENSOR}', '{ACME}', '{ACME_ASSET}', 'temperature', to_timestamp({t0}) + interval '119 minutes',
                         22, 'degC', 119, '{{}}', false, 'r-119');
                 INSERT INTO anomalies (event_id, tenant_id, asset_id, scope, sensor_id, sensor_type, detector, score,
                                        threshold, severity, contributing, triggered_by, backfill, occurred_at, recorded_at)
                 VALUES ('a-1', '{ACME}', '{ACME_ASSET}', 'sensor', '{ACME_SENSOR}', 'temperature', 'robust_z', 9, 4, 3,
                         '[]', '{{}}', false, to_timestamp({t0}), to_timestamp({t0}));
                 INSERT INTO drift_events (event_id, tenant_id, asset_id, sensor_id, sensor_type, test, statistic,
                                           reference_start, reference_end, reference_size, current_start, current_end,
                                           current_size, backfill, occurred_at, recorded_at)
                 VALUES ('d-1', '{ACME}', '{ACME_ASSET}', '{ACME_SENSOR}', 'temperature', 'ks', 0.4, to_timestamp({t0}),
                         to_timestamp({t0}), 60, to_timestamp({t0}), to_timestamp({t0}), 60, false,
                         to_timestamp({t0}), to_timestamp({t0}));
                 INSERT INTO predictions (event_id, tenant_id, asset_id, asset_type, occurred_at, recorded_at, model_name,
                                          model_version, model_kind, rul_seconds, rul_low_seconds, rul_high_seconds,
                                          coverage, horizon_seconds, failure_probability, cycles, contributions)
                 VALUES ('p-1', '{ACME}', '{ACME_ASSET}', 'pump', to_timestamp({t0}), to_timestamp({t0}), 'rul-pump', 1,
                         'remaining_useful_life', 3600, 1800, 7200, 0.9, 86400, 0.2, 10, '[]');",
                t0 = T0 / SECOND
            ))
            .await
            .unwrap();
    }

    async fn stop(mut self) {
        let _ = self.stop_projection.take().unwrap().send(());
        self.server.stop().await;
    }
}

/// Calls `path` with an empty request and `channel`'s credentials; the status, `Ok` when the
/// call was answered. An empty message is a valid request of every method, so the call
/// reaches the auth layer (and, past it, the handler) for any RPC in the table.
async fn raw_call<T>(channel: T, path: &str) -> Code
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(Into::into).unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let path = PathAndQuery::try_from(path).unwrap();
    match grpc.server_streaming(tonic::Request::new(()), path, codec).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// The message of a refused raw call.
async fn raw_refusal(channel: AuthChannel, path: &str) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let uri = PathAndQuery::try_from(path).unwrap();
    grpc.server_streaming(tonic::Request::new(()), uri, codec).await.err().unwrap_or_else(|| panic!("{path} answered"))
}

fn code<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

fn ts(micros: i64) -> Option<prost_types::Timestamp> {
    Some(sm_proto::convert::to_timestamp(sm_domain::Timestamp(micros)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_refuses_the_unauthenticated_and_the_unpermitted_and_shows_no_other_tenants_data() {
    let fixture = Fixture::start().await;
    let acme_viewer = fixture.key(ACME, "viewer").await;
    let acme_admin = fixture.key(ACME, "admin").await;
    let globex_viewer = fixture.key(GLOBEX, "viewer").await;
    let globex_admin = fixture.key(GLOBEX, "admin").await;
    let unknown = sm_identity::ApiKey::generate().reveal();
    let forged = format!("{}_{}", &acme_viewer[..acme_viewer.rfind('_').unwrap()], "0".repeat(64));
    let server = &fixture.server;

    for (path, permission) in PERMISSIONS {
        // No credentials, an unknown key, a known id with the wrong secret, and junk.
        assert_eq!(
            raw_call(server.plain_channel().await, path).await,
            Code::Unauthenticated,
            "{path} without credentials"
        );
        for bad in [unknown.as_str(), forged.as_str(), "not-a-token"] {
            assert_eq!(raw_call(server.channel_as(bad).await, path).await, Code::Unauthenticated, "{path} with {bad}");
        }
        // A role without the permission: refused, naming what is needed.
        if !sm_identity::Role::Viewer.grants(*permission) {
            let status = raw_refusal(server.channel_as(&acme_viewer).await, path).await;
            assert_eq!(status.code(), Code::PermissionDenied, "{path} as a viewer: {status:?}");
            assert!(status.message().contains(permission.as_str()), "{path}: {}", status.message());
        }
    }

    // Per RPC: the right role of the other tenant sees none of acme's data, acme's own does.
    // A new RPC in the table without a case here fails the test.
    let (acme, globex) = (server.channel_as(&acme_viewer).await, server.channel_as(&globex_viewer).await);
    let (acme_admin_ch, globex_admin_ch) =
        (server.channel_as(&acme_admin).await, server.channel_as(&globex_admin).await);
    for (path, _) in PERMISSIONS {
        let method = path.rsplit('/').next().unwrap();
        let service = path.split('/').nth(1).unwrap();
        match (service, method) {
            ("sm.v1.ReadingService", "ListReadings") => {
                let request =
                    || v1::ListReadingsRequest { asset_id: ACME_ASSET.into(), page_size: 1000, ..Default::default() };
                let own = ReadingServiceClient::new(acme.clone()).list_readings(request()).await.unwrap().into_inner();
                assert_eq!(own.readings.len(), 120);
                let other =
                    ReadingServiceClient::new(globex.clone()).list_readings(request()).await.unwrap().into_inner();
                assert!(other.readings.is_empty(), "{other:?}");
            }
            ("sm.v1.ReadingService", "Aggregate") => {
                let request = || v1::AggregateRequest {
                    asset_id: ACME_ASSET.into(),
                    start: ts(T0),
                    end: ts(T0 + 7200 * SECOND),
                    // Not whole minutes: raw readings (this test writes no rollups).
                    bucket_width: Some(prost_types::Duration { seconds: 90, nanos: 0 }),
                    ..Default::default()
                };
                let own = ReadingServiceClient::new(acme.clone()).aggregate(request()).await.unwrap().into_inner();
                assert_eq!(own.buckets.iter().map(|b| b.count).sum::<i64>(), 120, "{own:?}");
                let other = ReadingServiceClient::new(globex.clone()).aggregate(request()).await.unwrap().into_inner();
                assert!(other.buckets.is_empty(), "{other:?}");
            }
            ("sm.v1.ReadingService", "Latest") => {
                let request = || v1::LatestRequest { asset_id: ACME_ASSET.into() };
                let own = ReadingServiceClient::new(acme.clone()).latest(request()).await.unwrap().into_inner();
                assert_eq!(own.readings.len(), 1);
                assert_eq!(code(ReadingServiceClient::new(globex.clone()).latest(request()).await), Code::NotFound);
            }
            ("sm.v1.AssetService", "ListAssets") => {
                let ids = |response: v1::ListAssetsResponse| -> Vec<String> {
                    response.assets.into_iter().map(|a| a.asset_id).collect()
                };
                let own = AssetServiceClient::new(acme.clone()).list_assets(v1::ListAssetsRequest::default()).await;
                assert_eq!(ids(own.unwrap().into_inner()), [ACME_ASSET]);
                let other = AssetServiceClient::new(globex.clone()).list_assets(v1::ListAssetsRequest::default()).await;
                assert_eq!(ids(other.unwrap().into_inner()), [GLOBEX_ASSET]);
            }
            ("sm.v1.AssetService", "GetAsset") => {
                let request = || v1::GetAssetRequest { asset_id: ACME_ASSET.into() };
                let own = AssetServiceClient::new(acme.clone()).get_asset(request()).await.unwrap().into_inner();
                assert_eq!(own.asset.unwrap().sensors.len(), 1);
                assert_eq!(code(AssetServiceClient::new(globex.clone()).get_asset(request()).await), Code::NotFound);
            }
            ("sm.v1.AssetService", "RegisterAsset") => {
                let request = |tenant_id: &str| v1::RegisterAssetRequest {
                    asset_id: ACME_ASSET.into(),
                    tenant_id: tenant_id.into(),
                    name: "Pump 1".into(),
                    asset_type: "pump".into(),
                    site: "plant-a".into(),
                    sensors: vec![],
                };
                // Globex may not take acme's asset id, nor name acme as its tenant.
                let status =
                    AssetServiceClient::new(globex_admin_ch.clone()).register_asset(request("")).await.unwrap_err();
                assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
                assert!(status.message().contains("another tenant"), "{}", status.message());
                let status =
                    AssetServiceClient::new(globex_admin_ch.clone()).register_asset(request(ACME)).await.unwrap_err();
                assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
                let own = AssetServiceClient::new(acme_admin_ch.clone()).register_asset(request("")).await.unwrap();
                assert_eq!(own.into_inner().asset.unwrap().tenant_id, ACME, "the tenant is the caller's");
            }
            ("sm.v1.AlertService", "ListAnomalies") => {
                let own =
                    AlertServiceClient::new(acme.clone()).list_anomalies(v1::ListAnomaliesRequest::default()).await;
                assert_eq!(own.unwrap().into_inner().anomalies.len(), 1);
                let other =
                    AlertServiceClient::new(globex.clone()).list_anomalies(v1::ListAnomaliesRequest::default()).await;
                assert!(other.unwrap().into_inner().anomalies.is_empty());
            }
            ("sm.v1.AlertService", "ListDrift") => {
                let own = AlertServiceClient::new(acme.clone()).list_drift(v1::ListDriftRequest::default()).await;
                assert_eq!(own.unwrap().into_inner().drift.len(), 1);
                let other = AlertServiceClient::new(globex.clone()).list_drift(v1::ListDriftRequest::default()).await;
                assert!(other.unwrap().into_inner().drift.is_empty());
            }
            ("sm.v1.AlertService", "StreamAlerts") => {
                // Opens for both; which alerts a stream carries is the filter's (unit-tested in
                // `alerts`: a tenant's stream never carries another tenant's alert).
                for channel in [acme.clone(), globex.clone()] {
                    let opened =
                        AlertServiceClient::new(channel).stream_alerts(v1::StreamAlertsRequest::default()).await;
                    assert!(matches!(code(opened), Code::Ok | Code::Unavailable));
                }
            }
            ("sm.v1.DriftService", "CheckDrift") => {
                let request = || v1::CheckDriftRequest {
                    sensor_id: ACME_SENSOR.into(),
                    reference_from: ts(T0),
                    reference_to: ts(T0 + 3600 * SECOND),
                    current_from: ts(T0 + 3600 * SECOND),
                    current_to: ts(T0 + 7200 * SECOND),
                    psi_bins: None,
                };
                let own = DriftServiceClient::new(acme.clone()).check_drift(request()).await.unwrap().into_inner();
                assert_eq!((own.reference_size, own.current_size), (60, 60), "{own:?}");
                assert_eq!(code(DriftServiceClient::new(globex.clone()).check_drift(request()).await), Code::NotFound);
            }
            ("sm.v1.AnomalyService", "ScoreReadings") => {
                let request = || v1::ScoreReadingsRequest {
                    sensor_id: ACME_SENSOR.into(),
                    values: vec![v1::ScoredValue { at: ts(T0 + 7300 * SECOND), value: 21.0 }],
                    warmup_from: None,
                };
                let own = AnomalyServiceClient::new(acme.clone()).score_readings(request()).await.unwrap().into_inner();
                assert!(own.warmup_size > 0, "acme's history warms the detector: {own:?}");
                let other = AnomalyServiceClient::new(globex.clone()).score_readings(request()).await;
                assert_eq!(code(other), Code::NotFound);
            }
            // The model registry serves every tenant alike (models are platform-wide): both
            // tenants get the same answer, and only an admin of every tenant changes it.
            ("sm.v1.ModelService", "ListModels") => {
                let own = ModelServiceClient::new(acme.clone()).list_models(v1::ListModelsRequest::default()).await;
                let other = ModelServiceClient::new(globex.clone()).list_models(v1::ListModelsRequest::default()).await;
                assert_eq!(own.unwrap().into_inner(), other.unwrap().into_inner());
            }
            ("sm.v1.ModelService", "ListVersions" | "GetVersion" | "Resolve")
            | ("sm.v1.PredictionService", "Predict") => {
                // No such model: the same NOT_FOUND for both tenants (past the auth layer).
                for channel in [acme.clone(), globex.clone()] {
                    let answered = match method {
                        "ListVersions" => code(
                            ModelServiceClient::new(channel)
                                .list_versions(v1::ListVersionsRequest { name: "no-such-model".into() })
                                .await,
                        ),
                        "GetVersion" => code(
                            ModelServiceClient::new(channel)
                                .get_version(v1::GetVersionRequest { name: "no-such-model".into(), version: 1 })
                                .await,
                        ),
                        "Resolve" => code(
                            ModelServiceClient::new(channel)
                                .resolve(v1::ResolveRequest { name: "no-such-model".into(), selector: String::new() })
                                .await,
                        ),
                        _ => code(
                            PredictionServiceClient::new(channel)
                                .predict(v1::PredictRequest { model: "no-such-model".into(), ..Default::default() })
                                .await,
                        ),
                    };
                    assert_eq!(answered, Code::NotFound, "{path}");
                }
            }
            ("sm.v1.ModelService", "Promote" | "Archive") => {
                let status = raw_refusal(acme_admin_ch.clone(), path).await;
                assert_eq!(status.code(), Code::PermissionDenied, "a tenant's admin: {status:?}");
                assert!(status.message().contains("every tenant"), "{}", status.message());
                // The bootstrap admin passes; the empty request is then the handler's to refuse.
                assert_eq!(raw_call(server.channel().await, path).await, Code::InvalidArgument, "{path}");
            }
            ("sm.v1.PredictionService", "ListPredictions") => {
                let request = v1::ListPredictionsRequest::default;
                let own = PredictionServiceClient::new(acme.clone()).list_predictions(request()).await;
                assert_eq!(own.unwrap().into_inner().predictions.len(), 1);
                let other = PredictionServiceClient::new(globex.clone()).list_predictions(request()).await;
                assert!(other.unwrap().into_inner().predictions.is_empty());
            }
            ("sm.v1.PredictionService", "Latest") => {
                let request = || v1::LatestPredictionsRequest { asset_ids: vec![ACME_ASSET.into()] };
                let own = PredictionServiceClient::new(acme.clone()).latest(request()).await;
                assert_eq!(own.unwrap().into_inner().predictions.len(), 1);
                let other = PredictionServiceClient::new(globex.clone()).latest(request()).await;
                assert!(other.unwrap().into_inner().predictions.is_empty());
            }
            ("sm.v1.KeyService", "CreateKey") => {
                let request = |tenant_id: &str| v1::CreateKeyRequest {
                    name: "script".into(),
                    roles: vec!["viewer".into()],
                    tenant_id: tenant_id.into(),
                    expires_at: None,
                };
                let created = KeyServiceClient::new(acme_admin_ch.clone()).create_key(request("")).await.unwrap();
                assert_eq!(created.into_inner().key.unwrap().tenant_id, ACME, "the caller's tenant");
                for tenant in [GLOBEX, "*"] {
                    let refused = KeyServiceClient::new(acme_admin_ch.clone()).create_key(request(tenant)).await;
                    assert_eq!(code(refused), Code::PermissionDenied, "acme's admin making a key of {tenant}");
                }
            }
            ("sm.v1.KeyService", "ListKeys") => {
                let tenants = |channel: AuthChannel| async move {
                    let keys = KeyServiceClient::new(channel).list_keys(v1::ListKeysRequest::default()).await;
                    keys.unwrap().into_inner().keys.into_iter().map(|k| k.tenant_id).collect::<Vec<_>>()
                };
                let own = tenants(acme_admin_ch.clone()).await;
                assert!(own.len() >= 2 && own.iter().all(|t| t == ACME), "{own:?}");
                let other = tenants(globex_admin_ch.clone()).await;
                assert!(!other.is_empty() && other.iter().all(|t| t == GLOBEX), "{other:?}");
            }
            ("sm.v1.KeyService", "RevokeKey") => {
                let id = acme_viewer.split('_').nth(1).unwrap().to_owned();
                let request = || v1::RevokeKeyRequest { key_id: id.clone(), reason: "test".into() };
                let other = KeyServiceClient::new(globex_admin_ch.clone()).revoke_key(request()).await;
                assert_eq!(code(other), Code::NotFound, "globex cannot see acme's key");
                // Acme's own revocation is the revocation test's; here it only passes auth.
                let empty = KeyServiceClient::new(acme_admin_ch.clone())
                    .revoke_key(v1::RevokeKeyRequest { key_id: String::new(), reason: String::new() })
                    .await;
                assert_eq!(code(empty), Code::InvalidArgument);
            }
            _ => panic!("{path} has no cross-tenant case in this test: add one"),
        }
    }
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_refused_within_five_seconds_without_a_restart() {
    let fixture = Fixture::start().await;
    let key = fixture.key(ACME, "viewer").await;
    let channel = fixture.server.channel_as(&key).await;
    let mut assets = AssetServiceClient::new(channel);
    // Used first, so this instance has it cached.
    assets.list_assets(v1::ListAssetsRequest::default()).await.unwrap();

    // Revoked through a second instance on the same projection: the first only sees the
    // projection change (its cached copy ages out), as every other instance would.
    let other = common::Server::start(&fixture.config, &fixture.schema).await;
    let key_id = key.split('_').nth(1).unwrap().to_owned();
    let revoked_at = Instant::now();
    KeyServiceClient::new(other.channel().await)
        .revoke_key(v1::RevokeKeyRequest { key_id, reason: "leaked in a ticket".into() })
        .await
        .unwrap();
    let refused = loop {
        match assets.list_assets(v1::ListAssetsRequest::default()).await {
            Err(status) if status.code() == Code::Unauthenticated => break status,
            Err(status) => panic!("{status:?}"),
            Ok(_) => {
                assert!(revoked_at.elapsed() < Duration::from_secs(5), "a revoked key still works after 5 s");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(refused.message().contains("revoked"), "{}", refused.message());
    let listed = KeyServiceClient::new(fixture.server.channel().await)
        .list_keys(v1::ListKeysRequest { tenant_id: ACME.into(), include_revoked: true })
        .await
        .unwrap()
        .into_inner();
    let entry = listed.keys.iter().find(|k| key.contains(&k.key_id)).expect("listed with revoked keys");
    assert!(entry.revoked_at.is_some() && entry.revoked_by.starts_with("key:"), "{entry:?}");
    other.stop().await;
    fixture.stop().await;
}

/// Rows of `table` the query role sees with `tenant` set (none: nothing set), and how many of
/// them are of another tenant.
async fn count(client: &mut deadpool_postgres::Object, tenant: Option<&str>, table: &str) -> (i64, i64) {
    let tx = client.transaction().await.unwrap();
    if let Some(tenant) = tenant {
        tx.execute("SELECT set_config('sm.tenant_id', $1, true)", &[&tenant]).await.unwrap();
    }
    let total: i64 = tx.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0);
    let foreign: i64 = if ["sensors", "readings_1m", "readings_1h"].contains(&table) {
        0
    } else {
        let sql = format!("SELECT count(*) FROM {table} WHERE tenant_id <> $1");
        tx.query_one(&sql, &[&tenant.unwrap_or("")]).await.unwrap().get(0)
    };
    (total, foreign)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_security_shows_the_query_role_only_its_tenants_rows() {
    let fixture = Fixture::start().await;
    // Logged in as the query service is (sm_query), with no SET ROLE: the login role itself
    // is subject to the policies.
    let query_role = sm_storage::connect(&PostgresConfig {
        url: Secret(fixture.schema.query_url.clone()),
        pool_size: 1,
        ..Default::default()
    })
    .unwrap();
    let mut client = query_role.get().await.unwrap();
    // Every tenant table, as the query role: nothing with no tenant set, acme's rows only
    // with acme set (queries with no WHERE tenant_id at all), everything with `*`.
    let tables = sm_projector::schema::TENANT_TABLES.iter().chain(["sensors", "readings_1m", "readings_1h"].iter());
    for table in tables {
        let (none, _) = count(&mut client, None, table).await;
        assert_eq!(none, 0, "{table}: rows visible with no tenant set");
        let (_, foreign) = count(&mut client, Some(ACME), table).await;
        assert_eq!(foreign, 0, "{table}: another tenant's rows visible to acme");
        let (globex, _) = count(&mut client, Some(GLOBEX), table).await;
        let (all, _) = count(&mut client, Some("*"), table).await;
        assert!(all >= globex, "{table}");
    }
    // The owner wrote both tenants' assets; acme's role sees its one.
    let tx = client.transaction().await.unwrap();
    tx.execute("SELECT set_config('sm.tenant_id', 'acme', true)", &[]).await.unwrap();
    let ids: Vec<String> =
        tx.query("SELECT asset_id FROM assets", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, [ACME_ASSET]);
    let sensors: i64 = tx.query_one("SELECT count(*) FROM sensors", &[]).await.unwrap().get(0);
    assert_eq!(sensors, 1);
    drop(tx);
    // And the setting does not outlive its transaction on a pooled connection.
    let after: Option<String> =
        client.query_one("SELECT nullif(current_setting('sm.tenant_id', true), '')", &[]).await.unwrap().get(0);
    assert_eq!(after, None);
    // Nor may it write a projection or change the schema: that is the owner's.
    for statement in [
        "DELETE FROM assets",
        "UPDATE api_keys SET revoked_at = NULL",
        "ALTER TABLE readings DISABLE ROW LEVEL SECURITY",
        "CREATE TABLE query_role_scratch (x int)",
    ] {
        let error = client.batch_execute(statement).await.expect_err(statement);
        assert_eq!(
            error.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{statement}: {error}"
        );
    }
    let _ = &fixture.stack;
    drop(client);
    fixture.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_logged_in_as_the_owner_is_not_ready_and_says_why() {
    let fixture = Fixture::start().await;
    // The owner's pool (the fixture's), which row-level security does not apply to.
    let server = sm_query::QueryServer::new(&fixture.config, fixture.pool.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let health = sm_telemetry::Health::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn({
        let health = health.clone();
        async move {
            server
                .serve(listener, health, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap()
        }
    });
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut probe = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = probe
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::NotServing);
    let report = health.report();
    assert!(report.contains("row-level security does not apply") && report.contains("sm_query"), "{report}");
    let _ = stop.send(());
    task.await.unwrap();
    fixture.stop().await;
}
