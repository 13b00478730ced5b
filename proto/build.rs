//! Generates the gRPC code. `protox` compiles the .proto in pure Rust, so no
//! `protoc` has to be installed on the machine.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/ktrail/v1/ktrail.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_build::configure().compile_fds(fds)?;
    Ok(())
}
