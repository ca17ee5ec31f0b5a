//! `sm.v1.ModelService`: the model registry (`sm_registry::Registry`) read over gRPC, and the
//! two commands that move a version through its stages, `Promote` and `Archive`.
//!
//! A command writes the registry first (its transaction archives the previous production
//! version together with the promotion), then publishes what it did (`ModelPromoted`,
//! `ModelArchived`) on `sm.models.v1`, keyed by model name, and answers once the broker has
//! acknowledged it. The two steps are not one transaction: if the broker is down after the
//! write, the client gets `UNAVAILABLE` and retries; the registry's writes are idempotent
//! (the retry is `Change::Unchanged`) and the event is published again, so a retry never loses
//! the event, and a follower that sees it twice applies it once.
//!
//! Not here: registering versions (the trainer and `smctl train` do it, with the artifact) and
//! running models (`crate::predictions`).

use crate::assets::{DEFAULT_TENANT, PRODUCER, check_id};
use crate::error::{QueryError, invalid_model_name, invalid_selector};
use crate::metrics::observe;
use sm_domain::{AssetId, DomainEvent, Envelope, TenantId, Timestamp, rfc3339};
use sm_identity::{Principal, TenantScope};
use sm_kafka::Announcer;
use sm_proto::convert::to_timestamp;
use sm_proto::v1::{self, model_service_server::ModelService};
use sm_registry::{Change, ModelSummary, ModelVersion, Registry, Selector};
use tonic::{Request, Response, Status};

/// A model name from a request: the registry's alphabet, or `INVALID_ARGUMENT` on `field`.
pub fn model_name(field: &str, name: &str) -> Result<String, QueryError> {
    if name.is_empty() {
        return Err(QueryError::invalid(
            field,
            "is required: the model's name in the registry (ListModels lists them)",
        ));
    }
    sm_registry::validate_model_name(name).map_err(|_| QueryError::invalid(field, invalid_model_name(name)))?;
    Ok(name.to_owned())
}

/// A version selector; empty means `auto`.
pub fn selector(text: &str) -> Result<Selector, QueryError> {
    if text.is_empty() {
        return Ok(Selector::Auto);
    }
    text.parse().map_err(|_: sm_registry::RegistryError| QueryError::invalid("selector", invalid_selector(text)))
}

/// A version number: 1 or more, and within the registry's column (`i32`).
fn version_number(version: u32) -> Result<u32, QueryError> {
    if version == 0 || i32::try_from(version).is_err() {
        return Err(QueryError::invalid(
            "version",
            format!("{version} is not a version number: send 1, 2, ... (ListVersions lists them)"),
        ));
    }
    Ok(version)
}

/// The reason recorded with a command: who did it and why. Required, so the record explains
/// itself.
fn reason(text: &str) -> Result<String, QueryError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(QueryError::invalid("reason", "is required: who does this and why, for the record"));
    }
    Ok(text.to_owned())
}

fn tenant(text: &str) -> Result<TenantId, QueryError> {
    if text.is_empty() {
        return Ok(TenantId::from(DEFAULT_TENANT));
    }
    check_id("tenant_id", text)?;
    Ok(TenantId::from(text))
}

/// A registry summary as its message.
pub fn summary_message(summary: ModelSummary) -> v1::ModelSummary {
    v1::ModelSummary {
        name: summary.name,
        kind: summary.kind.as_str().to_owned(),
        versions: summary.versions,
        latest_version: summary.latest_version,
        production_version: summary.production,
        newest_staging_version: summary.newest_staging,
        created_at: Some(to_timestamp(summary.created_at)),
    }
}

/// A registry version as its message. The registry returns training times as RFC 3339; one it
/// cannot parse was written by hand, and is reported rather than dropped.
pub fn version_message(version: ModelVersion) -> Result<v1::ModelVersion, QueryError> {
    let time = |field: &str, text: Option<String>| {
        text.map(|text| {
            rfc3339::parse(&text).map(to_timestamp).map_err(|e| QueryError::CorruptRow {
                table: "sm_model_versions",
                reason: format!("{field} {text:?}: {e}"),
            })
        })
        .transpose()
    };
    let training = v1::TrainingData {
        from: time("training_from", version.training.from)?,
        to: time("training_to", version.training.to)?,
        source: version.training.source,
        rows: version.training.rows as u64,
        units: version.training.units as u64,
    };
    Ok(v1::ModelVersion {
        name: version.name,
        version: version.version,
        stage: version.stage.as_str().to_owned(),
        kind: version.kind.as_str().to_owned(),
        asset_type: version.asset_type,
        features: version.features,
        training: Some(training),
        metrics: version.metrics.into_iter().collect(),
        comparison: version.comparison.map(|c| c.to_string()).unwrap_or_default(),
        artifact: Some(v1::ArtifactRef {
            location: version.artifact.location,
            sha256: version.artifact.sha256,
            size: version.artifact.size,
        }),
        created_at: Some(to_timestamp(version.created_at)),
        promoted_at: version.promoted_at.map(to_timestamp),
        archived_at: version.archived_at.map(to_timestamp),
    })
}

/// Models serve every tenant (one registry per platform), so only an admin of every tenant
/// may promote or archive one; a tenant's admin may not change what other tenants are served.
fn platform_wide(principal: &Principal) -> Result<(), QueryError> {
    match principal.tenants {
        TenantScope::All => Ok(()),
        TenantScope::One(ref tenant) => Err(QueryError::PermissionDenied(format!(
            "models serve every tenant: promoting or archiving needs an admin of every tenant (`*`); {principal} is an admin of {tenant} only"
        ))),
    }
}

/// The `ModelService` implementation.
pub struct Models {
    registry: Registry,
    /// Publishes the commands' events (idempotent producer, waits for the acknowledgement).
    announcer: Announcer,
    /// `sm.models.v1`, unless a test says otherwise.
    topic: String,
}

impl Models {
    pub fn new(registry: Registry, announcer: Announcer, topic: String) -> Self {
        Self { registry, announcer, topic }
    }

    /// Publishes a registry event keyed by model name (so one model's events stay in order),
    /// its envelope's asset id being the model name too; returns the event id.
    async fn announce<T: DomainEvent>(
        &self,
        tenant: TenantId,
        name: &str,
        at: Timestamp,
        payload: T,
    ) -> Result<String, QueryError> {
        let event = Envelope::origin(tenant, AssetId::from(name), at, PRODUCER, payload);
        self.announcer.announce(&self.topic, name, &event).await?;
        tracing::info!(model = name, event_type = T::EVENT_TYPE, event_id = %event.header.event_id, "registry change announced");
        Ok(event.header.event_id.to_string())
    }

    async fn list_models_page(&self) -> Result<v1::ListModelsResponse, QueryError> {
        let models = self.registry.list_models().await?;
        Ok(v1::ListModelsResponse { models: models.into_iter().map(summary_message).collect() })
    }

    async fn list_versions_page(
        &self,
        request: v1::ListVersionsRequest,
    ) -> Result<v1::ListVersionsResponse, QueryError> {
        let name = model_name("name", &request.name)?;
        let versions = self.registry.list_versions(&name).await?;
        Ok(v1::ListVersionsResponse { versions: versions.into_iter().map(version_message).collect::<Result<_, _>>()? })
    }

    async fn get_version(&self, request: v1::GetVersionRequest) -> Result<v1::GetVersionResponse, QueryError> {
        let name = model_name("name", &request.name)?;
        let version = version_number(request.version)?;
        let version = self.registry.get(&name, version).await?;
        Ok(v1::GetVersionResponse { version: Some(version_message(version)?) })
    }

    async fn resolve_version(&self, request: v1::ResolveRequest) -> Result<v1::ResolveResponse, QueryError> {
        let name = model_name("name", &request.name)?;
        let selector = selector(&request.selector)?;
        let version = self.registry.resolve(&name, selector).await?;
        Ok(v1::ResolveResponse { version: Some(version_message(version)?) })
    }

    async fn promote_version(
        &self,
        principal: &Principal,
        request: v1::PromoteRequest,
    ) -> Result<v1::PromoteResponse, QueryError> {
        platform_wide(principal)?;
        let name = model_name("name", &request.name)?;
        let version = version_number(request.version)?;
        // Who did it is the authenticated principal, never a name in the request.
        let reason = format!("{principal}: {}", reason(&request.reason)?);
        let tenant = tenant(&request.tenant_id)?;
        let now = Timestamp::now();
        let promotion = self.registry.promote(&name, version, now).await?;
        // A promotion by hand carries no champion/challenger figures; the trainer's do.
        let payload = sm_registry::events::promoted(&name, version, promotion.archived, &reason, Default::default());
        let event_id = self.announce(tenant, &name, now, payload).await?;
        let current = self.registry.get(&name, version).await?;
        Ok(v1::PromoteResponse {
            version: Some(version_message(current)?),
            archived_version: promotion.archived,
            changed: promotion.change == Change::Applied,
            event_id,
        })
    }

    async fn archive_version(
        &self,
        principal: &Principal,
        request: v1::ArchiveRequest,
    ) -> Result<v1::ArchiveResponse, QueryError> {
        platform_wide(principal)?;
        let name = model_name("name", &request.name)?;
        let version = version_number(request.version)?;
        // Who did it is the authenticated principal, never a name in the request.
        let reason = format!("{principal}: {}", reason(&request.reason)?);
        let tenant = tenant(&request.tenant_id)?;
        let now = Timestamp::now();
        let change = self.registry.archive(&name, version, now).await?;
        let payload = sm_registry::events::archived(&name, version, &reason);
        let event_id = self.announce(tenant, &name, now, payload).await?;
        let current = self.registry.get(&name, version).await?;
        Ok(v1::ArchiveResponse {
            version: Some(version_message(current)?),
            changed: change == Change::Applied,
            event_id,
        })
    }
}

#[tonic::async_trait]
impl ModelService for Models {
    async fn list_models(
        &self,
        _request: Request<v1::ListModelsRequest>,
    ) -> Result<Response<v1::ListModelsResponse>, Status> {
        observe("ListModels", self.list_models_page()).await
    }

    async fn list_versions(
        &self,
        request: Request<v1::ListVersionsRequest>,
    ) -> Result<Response<v1::ListVersionsResponse>, Status> {
        observe("ListVersions", self.list_versions_page(request.into_inner())).await
    }

    async fn get_version(
        &self,
        request: Request<v1::GetVersionRequest>,
    ) -> Result<Response<v1::GetVersionResponse>, Status> {
        observe("GetVersion", Models::get_version(self, request.into_inner())).await
    }

    async fn resolve(&self, request: Request<v1::ResolveRequest>) -> Result<Response<v1::ResolveResponse>, Status> {
        observe("Resolve", self.resolve_version(request.into_inner())).await
    }

    async fn promote(&self, request: Request<v1::PromoteRequest>) -> Result<Response<v1::PromoteResponse>, Status> {
        observe("Promote", async move {
            let principal = crate::auth::principal(&request)?.clone();
            self.promote_version(&principal, request.into_inner()).await
        })
        .await
    }

    async fn archive(&self, request: Request<v1::ArchiveRequest>) -> Result<Response<v1::ArchiveResponse>, Status> {
        observe("Archive", async move {
            let principal = crate::auth::principal(&request)?.clone();
            self.archive_version(&principal, request.into_inner()).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sm_models::{ModelKind, TrainingData};
    use sm_registry::{ArtifactRef, RegistryError, Stage};
    use std::collections::BTreeMap;

    fn refused(result: Result<impl std::fmt::Debug, QueryError>) -> String {
        let status = Status::from(result.unwrap_err());
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{}", status.message());
        status.message().to_owned()
    }

    #[test]
    fn request_fields_are_checked_and_named() {
        assert_eq!(model_name("name", "milling-failure").unwrap(), "milling-failure");
        assert!(refused(model_name("name", "")).starts_with("name: is required"));
        assert!(refused(model_name("model", "Bad Name")).starts_with("model: model name \"Bad Name\" is not valid"));
        assert_eq!(selector("").unwrap(), Selector::Auto);
        assert_eq!(selector("3").unwrap(), Selector::Version(3));
        assert!(refused(selector("latest")).starts_with("selector: invalid version selector \"latest\""));
        assert!(refused(version_number(0)).starts_with("version: 0 is not a version number"));
        assert!(version_number(u32::MAX).is_err());
        assert!(refused(reason("  ")).starts_with("reason: is required"));
        assert_eq!(tenant("").unwrap().as_str(), DEFAULT_TENANT);
        assert!(refused(tenant(" acme")).starts_with("tenant_id:"));
    }

    #[test]
    fn long_names_and_selectors_are_quoted_short() {
        let huge = "N".repeat(100_000);
        for message in [refused(model_name("name", &huge)), refused(selector(&huge))] {
            assert!(message.len() < 300 && message.contains("99936 bytes cut"), "{message}");
        }
        // The same through the registry's own errors.
        for error in [RegistryError::InvalidName(huge.clone()), RegistryError::InvalidSelector(huge.clone())] {
            let status = Status::from(QueryError::from(error));
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().len() < 300 && status.message().contains("bytes cut"), "{}", status.message());
        }
    }

    #[test]
    fn versions_become_messages_field_for_field() {
        let version = ModelVersion {
            name: "milling-failure".into(),
            version: 3,
            stage: Stage::Production,
            kind: ModelKind::FailureClassifier,
            asset_type: "mill".into(),
            features: vec!["power_w".into()],
            training: TrainingData {
                source: "ai4i2020.csv".into(),
                from: Some("2025-12-01T00:00:00Z".into()),
                to: None,
                rows: 8_000,
                units: 10,
            },
            metrics: BTreeMap::from([("test_f1".into(), 0.87)]),
            comparison: Some(serde_json::json!({"challenger_f1": 0.87})),
            artifact: ArtifactRef { location: "file:///m/v3/model.json".into(), sha256: "ab".repeat(32), size: 42 },
            created_at: Timestamp(1_000_000),
            promoted_at: Some(Timestamp(2_000_000)),
            archived_at: None,
        };
        let message = version_message(version).unwrap();
        assert_eq!(
            (message.version, message.stage.as_str(), message.kind.as_str()),
            (3, "production", "failure_classifier")
        );
        let training = message.training.unwrap();
        assert_eq!(training.from, Some(prost_types::Timestamp { seconds: 1_764_547_200, nanos: 0 }));
        assert_eq!((training.to, training.rows, training.units), (None, 8_000, 10));
        assert_eq!(message.metrics["test_f1"], 0.87);
        assert_eq!(message.comparison, r#"{"challenger_f1":0.87}"#);
        assert_eq!(message.artifact.unwrap().size, 42);
        assert_eq!(message.promoted_at, Some(prost_types::Timestamp { seconds: 2, nanos: 0 }));
        assert_eq!(message.archived_at, None);
    }
}
