//! The platform's gRPC API, generated at build time from `proto/sm/v1/*.proto` (see
//! `build.rs`; nothing generated is committed).
//!
//! Layout:
//! - [`v1`]: messages, clients and server traits of package `sm.v1`;
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for gRPC reflection;
//! - [`auth`]: client credentials ([`auth::Credentials`]: `SM_API_KEY` or `SM_TOKEN` on every
//!   call);
//! - [`convert`]: event time to and from `google.protobuf.Timestamp`, sensor specs to and
//!   from the domain's [`sm_domain::SensorSpec`], and the analytics events (anomalies, drift,
//!   stale sensors, retrain requests) to their messages;
//! - the clients re-exported at the top ([`ReadingServiceClient`], [`AssetServiceClient`],
//!   [`AlertServiceClient`], [`DriftServiceClient`], [`AnomalyServiceClient`],
//!   [`ModelServiceClient`], [`PredictionServiceClient`], [`KeyServiceClient`]), so a
//!   command-line tool needs only `sm_proto::ReadingServiceClient::connect(url)`.
//!
//! It holds no server logic: `services/query` implements the server traits.

pub mod auth;
pub mod convert;

/// Package `sm.v1`.
pub mod v1 {
    tonic::include_proto!("sm.v1");
}

/// `FileDescriptorSet` of every file in `proto/sm/v1` and what they import, encoded: register
/// it with `tonic_reflection` so `grpcurl` works without the .proto files.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sm_v1_descriptor.bin"));

pub use v1::alert_service_client::AlertServiceClient;
pub use v1::anomaly_service_client::AnomalyServiceClient;
pub use v1::asset_service_client::AssetServiceClient;
pub use v1::drift_service_client::DriftServiceClient;
pub use v1::key_service_client::KeyServiceClient;
pub use v1::model_service_client::ModelServiceClient;
pub use v1::prediction_service_client::PredictionServiceClient;
pub use v1::reading_service_client::ReadingServiceClient;

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn descriptor_set_holds_every_service() {
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let services: Vec<String> = set
            .file
            .iter()
            .filter(|f| f.package() == "sm.v1")
            .flat_map(|f| f.service.iter().map(|s| format!("sm.v1.{}", s.name())))
            .collect();
        for service in [
            "sm.v1.ReadingService",
            "sm.v1.AssetService",
            "sm.v1.AlertService",
            "sm.v1.DriftService",
            "sm.v1.AnomalyService",
            "sm.v1.ModelService",
            "sm.v1.PredictionService",
            "sm.v1.KeyService",
        ] {
            assert!(services.contains(&service.to_owned()), "{service} not in {services:?}");
        }
        assert!(set.file.iter().any(|f| f.name() == "google/protobuf/timestamp.proto"), "imports are included");
    }
}
