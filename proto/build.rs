//! Generates the gRPC code. `protox` compiles the .proto in pure Rust, so no
//! `protoc` has to be installed on the machine.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/ktrail/v1/ktrail.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_build::configure()
        // An event's payload as `bytes::Bytes` (same wire format): the collector
        // decodes it as a slice of the received message instead of copying it.
        .bytes([".ktrail.v1.SyscallEvent.data"])
        .compile_fds(fds)?;
    Ok(())
}
