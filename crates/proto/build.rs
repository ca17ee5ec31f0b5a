//! Compiles `proto/sm/v1/*.proto` into Rust (messages, clients, servers) in `OUT_DIR`, and
//! writes the encoded file descriptor set that gRPC reflection serves.
//!
//! The .proto files are parsed by `protox`, a protobuf compiler written in Rust, so building
//! needs no `protoc` on the machine or in the Docker image. Generated code is never committed.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not baked in with env!: clones at other paths share the target dir
    // (CI), and a build script compiled in one must not read the other's files.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let package_dir = root.join("sm/v1");
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&package_dir)?.map(|entry| entry.map(|e| e.path())).collect::<Result<_, _>>()?;
    files.retain(|path| path.extension().is_some_and(|ext| ext == "proto"));
    files.sort(); // stable output, whatever order the directory lists them in
    println!("cargo:rerun-if-changed={}", package_dir.display());
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    // Includes google/protobuf/*.proto (well-known types) from protox itself; keeps source
    // info so the proto comments become doc comments.
    let descriptors = protox::compile(&files, [&root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("sm_v1_descriptor.bin"), descriptors.encode_to_vec())?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
    Ok(())
}
