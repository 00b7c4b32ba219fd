//! Generates the Rust types of ONNX's protobuf schema (`proto/onnx-ml.proto`, vendored
//! from the ONNX project) with `protox`, a pure-Rust protobuf compiler, so building
//! needs no `protoc` binary.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/onnx-ml.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
