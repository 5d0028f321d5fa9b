//! Generates the TAK protocol version 1 messages from `data/schema/tak.proto`
//! with `protox` (a protobuf compiler in Rust, so no `protoc` is needed) and
//! `prost-build`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../data/schema/tak.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["../data/schema"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
