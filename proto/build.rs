//! Compiles `proto/hsmd.proto` into Rust at build time.
//!
//! The `.proto` file is parsed by `protox` (a pure-Rust protobuf compiler), so
//! no system `protoc` is needed: a fresh machine builds with cargo alone. The
//! resulting descriptor set is handed to `tonic-prost-build`, which writes the
//! prost messages and the tonic client and server into `OUT_DIR/hsmd.rs`.

use std::error::Error;

const PROTO_DIR: &str = "proto";
const PROTO_FILE: &str = "proto/hsmd.proto";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO_FILE}");
    let descriptors = protox::compile([PROTO_FILE], [PROTO_DIR])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
