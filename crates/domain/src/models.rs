//! The model registry's events on `sm.models.v1` (keyed by model name, so one model's events
//! stay in order). [`ModelEvent`] reads any of them.

use crate::codec::{Codec, CodecError};
use crate::events::{Decode, DomainEvent};
use crate::{Envelope, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A trained model version entered the registry, in stage `staging`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRegistered {
    pub name: String,
    pub version: i32,
    /// `failure_classifier` or `remaining_useful_life`.
    pub kind: String,
    /// The asset type it predicts for; empty for any.
    pub asset_type: String,
    pub features: Vec<String>,
    pub training_from: Option<Timestamp>,
    pub training_to: Option<Timestamp>,
    pub training_rows: i64,
    /// What it was trained on: a file, a simulation, the projected history.
    pub training_source: String,
    /// Evaluation on held-out units.
    pub metrics: BTreeMap<String, f64>,
    pub artifact_location: String,
    pub artifact_sha256: String,
    pub artifact_size: i64,
}

impl DomainEvent for ModelRegistered {
    const EVENT_TYPE: &'static str = "ModelRegistered";
    const SCHEMA: &'static str = "model_registered";
}

/// A model version became production; the previous production version is archived by it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelPromoted {
    pub name: String,
    pub version: i32,
    pub previous_version: Option<i32>,
    /// Who or what promoted it, and why.
    pub reason: String,
    /// Challenger and champion metrics on the same evaluation, when the trainer promoted it.
    pub comparison: BTreeMap<String, f64>,
}

impl DomainEvent for ModelPromoted {
    const EVENT_TYPE: &'static str = "ModelPromoted";
    const SCHEMA: &'static str = "model_promoted";
}

/// A model version was retired: never resolved again, kept for the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelArchived {
    pub name: String,
    pub version: i32,
    pub reason: String,
}

impl DomainEvent for ModelArchived {
    const EVENT_TYPE: &'static str = "ModelArchived";
    const SCHEMA: &'static str = "model_archived";
}

/// Any event of `sm.models.v1`.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelEvent {
    Registered(ModelRegistered),
    Promoted(ModelPromoted),
    Archived(ModelArchived),
}

impl Decode for ModelEvent {
    fn decode(codec: &Codec, bytes: &[u8], content_type: Option<&str>) -> Result<Envelope<Self>, CodecError> {
        use crate::events::decode_variant as wrap;
        const EXPECTED: &str = "a model registry event";
        match codec.subject_of(bytes, content_type, EXPECTED)? {
            ModelRegistered::SCHEMA => wrap(codec, bytes, content_type, ModelEvent::Registered),
            ModelPromoted::SCHEMA => wrap(codec, bytes, content_type, ModelEvent::Promoted),
            ModelArchived::SCHEMA => wrap(codec, bytes, content_type, ModelEvent::Archived),
            other => Err(CodecError::WrongEventType { expected: EXPECTED, found: other }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AssetId, TenantId};

    fn envelope<T: DomainEvent>(payload: T) -> Envelope<T> {
        Envelope::origin(TenantId::from("t"), AssetId::from("failure-pump"), Timestamp(1), "test", payload)
    }

    #[test]
    fn model_events_round_trip_and_dispatch_on_their_schema() {
        let codec = Codec::embedded().unwrap();
        let registered = ModelRegistered {
            name: "failure-pump".into(),
            version: 3,
            kind: "failure_classifier".into(),
            asset_type: "pump".into(),
            features: vec!["power_w".into(), "temp_diff_k".into()],
            training_from: Some(Timestamp(10)),
            training_to: None,
            training_rows: 8_000,
            training_source: "ai4i2020.csv".into(),
            metrics: BTreeMap::from([("f1".to_owned(), 0.87), ("roc_auc".to_owned(), 0.98)]),
            artifact_location: "models/failure-pump/3.json".into(),
            artifact_sha256: "ab".repeat(32),
            artifact_size: 1_048_576,
        };
        let promoted = ModelPromoted {
            name: "failure-pump".into(),
            version: 3,
            previous_version: Some(2),
            reason: "trainer: beat production".into(),
            comparison: BTreeMap::from([("challenger_f1".to_owned(), 0.9), ("champion_f1".to_owned(), 0.8)]),
        };
        let archived = ModelArchived { name: "failure-pump".into(), version: 1, reason: "replaced".into() };
        for (bytes, expected) in [
            (codec.encode(&envelope(registered.clone())).unwrap(), ModelEvent::Registered(registered)),
            (codec.encode(&envelope(promoted.clone())).unwrap(), ModelEvent::Promoted(promoted)),
            (codec.encode(&envelope(archived.clone())).unwrap(), ModelEvent::Archived(archived)),
        ] {
            assert_eq!(ModelEvent::decode(&codec, &bytes, None).unwrap().payload, expected);
        }
    }
}
