//! Compiles the project's own gRPC API (`proto/`) with protox, a pure-Rust protobuf compiler, so
//! building needs no system `protoc`. Envoy's API types come from the `envoy-types` crate.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/oidc_authz/admin/v1/admin.proto"];
    println!("cargo:rerun-if-changed=build.rs");
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    // Also kept as bytes, for gRPC server reflection (`grpcurl list`).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("admin_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
