//! The project's own gRPC API, generated from `proto/oidc_authz/admin/v1/admin.proto` by
//! `build.rs`. `admin::grpc` implements the service; the admin proto enums mirror the config schema.

/// `oidc_authz.admin.v1`: rule management (list, get, create, update, enable, disable, add a
/// condition, delete, explain).
pub mod v1 {
    tonic::include_proto!("oidc_authz.admin.v1");
}

/// The encoded file descriptor set of `proto/`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/admin_descriptor.bin"));
