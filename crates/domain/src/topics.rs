//! Every topic name, defined once. Names carry a version: a breaking schema change is a new
//! topic, while compatible evolution stays inside one (see `schemas/`).

/// Raw readings as gateways publish them (Avro or JSON).
pub const READINGS_RAW: &str = "sm.readings.raw.v1";
/// Readings that passed ingestion, in canonical units.
pub const READINGS_VALIDATED: &str = "sm.readings.validated.v1";
/// Dead letters of the readings path: what could not be decoded or failed validation.
pub const READINGS_REJECTED: &str = "sm.readings.rejected.v1";
/// Output of the pass-through agent (the runtime's reference agent and benchmark).
pub const READINGS_PASSTHROUGH: &str = "sm.readings.passthrough.v1";
/// Dead letters of the projector: events it could not decode or store.
pub const PROJECTIONS_REJECTED: &str = "sm.projections.rejected.v1";
/// Asset and sensor registry (compacted).
pub const ASSETS: &str = "sm.assets.v1";

/// What the anomaly agent finds: `AnomalyDetected`, `SensorStale`.
pub const ANOMALIES: &str = "sm.anomalies.v1";
/// What the drift agent finds: `DriftDetected`, `ModelRetrainRequested`.
pub const DRIFT: &str = "sm.drift.v1";
/// Dead letters of the analytics agents (anomaly, drift): inputs they could not use.
pub const ANALYTICS_REJECTED: &str = "sm.analytics.rejected.v1";
/// The anomaly agent's detector state, checkpointed with each transaction (compacted).
pub const ANOMALY_STATE: &str = "sm.anomaly.state.v1";
/// The drift agent's reference and current windows, checkpointed likewise (compacted).
pub const DRIFT_STATE: &str = "sm.drift.state.v1";

/// The model registry: `ModelRegistered`, `ModelPromoted`, `ModelArchived`, keyed by model
/// name. Kept forever: replaying it rebuilds the registry.
pub const MODELS: &str = "sm.models.v1";

/// The prediction agent's `FailurePredicted`, keyed by asset.
pub const PREDICTIONS: &str = "sm.predictions.v1";

/// The prediction agent's per-asset cycle history, checkpointed with every transaction
/// (compacted).
pub const PREDICTION_STATE: &str = "sm.prediction.state.v1";

/// API keys: `ApiKeyCreated`, `ApiKeyRevoked`, keyed by key id (compacted: the last event of
/// a key says whether it is valid).
pub const IDENTITY: &str = "sm.identity.v1";

/// Work-order events and `CommandRejected`, keyed by work-order id. Kept forever: the
/// orders' history.
pub const WORKORDERS: &str = "sm.workorders.v1";

/// Commands for the scheduling agent, keyed by site: people's `WorkOrderCommand`s and the live
/// predictions its intake forwards. One partition holds a site, so one instance owns its plan.
pub const COMMANDS: &str = "sm.commands.v1";

/// The technician roster: `TechnicianRegistered`, keyed by technician id (compacted).
pub const TECHNICIANS: &str = "sm.technicians.v1";

/// The scheduling agent's work orders and site plans, checkpointed with every transaction
/// (compacted).
pub const SCHEDULING_STATE: &str = "sm.scheduling.state.v1";

/// Dead letters of the scheduling agent: predictions and commands it could not use.
pub const SCHEDULING_REJECTED: &str = "sm.scheduling.rejected.v1";

/// Every platform topic, with whether it is compacted; `deploy/local` and the services
/// create these (never broker auto-creation).
pub const ALL: &[(&str, bool)] = &[
    (READINGS_RAW, false),
    (READINGS_VALIDATED, false),
    (READINGS_REJECTED, false),
    (READINGS_PASSTHROUGH, false),
    (PROJECTIONS_REJECTED, false),
    (ASSETS, true),
    (ANOMALIES, false),
    (DRIFT, false),
    (ANALYTICS_REJECTED, false),
    (ANOMALY_STATE, true),
    (DRIFT_STATE, true),
    (MODELS, false),
    (PREDICTIONS, false),
    (PREDICTION_STATE, true),
    (IDENTITY, true),
    (WORKORDERS, false),
    (COMMANDS, false),
    (TECHNICIANS, true),
    (SCHEDULING_STATE, true),
    (SCHEDULING_REJECTED, false),
];
