//! Compiles the project's own gRPC API (`proto/`) with protox, a pure-Rust protobuf compiler, so
//! building needs no system `protoc`. Envoy's API types come from the `envoy-types` crate.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/oidc_authz/admin/v1/admin.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
