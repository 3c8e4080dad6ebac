//! Compiles the .proto files with protox (pure Rust) when the `grpc` feature is on: a fresh
//! machine needs only cargo.

#[cfg(feature = "grpc")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/anyedge.proto");
    println!("cargo:rerun-if-changed=proto/control.proto");
    let fds = protox::compile(["proto/anyedge.proto", "proto/control.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}

#[cfg(not(feature = "grpc"))]
fn main() {}
