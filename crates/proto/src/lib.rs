//! The platform's gRPC API, generated at build time from `proto/sm/v1/*.proto` (see
//! `build.rs`; nothing generated is committed).
//!
//! Layout:
//! - [`v1`]: messages, clients and server traits of package `sm.v1`;
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for gRPC reflection;
//! - [`convert`]: event time to and from `google.protobuf.Timestamp`, and sensor specs to and
//!   from the domain's [`sm_domain::SensorSpec`];
//! - the clients re-exported at the top ([`ReadingServiceClient`], [`AssetServiceClient`]), so a
//!   command-line tool needs only `sm_proto::ReadingServiceClient::connect(url)`.
//!
//! It holds no server logic: `services/query` implements the server traits.

pub mod convert;

/// Package `sm.v1`.
pub mod v1 {
    tonic::include_proto!("sm.v1");
}

/// `FileDescriptorSet` of every file in `proto/sm/v1` and what they import, encoded: register
/// it with `tonic_reflection` so `grpcurl` works without the .proto files.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sm_v1_descriptor.bin"));

pub use v1::asset_service_client::AssetServiceClient;
pub use v1::reading_service_client::ReadingServiceClient;

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn descriptor_set_holds_both_services() {
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let services: Vec<String> = set
            .file
            .iter()
            .filter(|f| f.package() == "sm.v1")
            .flat_map(|f| f.service.iter().map(|s| format!("sm.v1.{}", s.name())))
            .collect();
        assert!(services.contains(&"sm.v1.ReadingService".to_owned()), "{services:?}");
        assert!(services.contains(&"sm.v1.AssetService".to_owned()), "{services:?}");
        assert!(set.file.iter().any(|f| f.name() == "google/protobuf/timestamp.proto"), "imports are included");
    }
}
