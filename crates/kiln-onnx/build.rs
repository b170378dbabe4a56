//! Compiles the vendored `proto/onnx.proto` into Rust types at build time: `protox` parses it
//! (pure Rust, no `protoc` needed) and `prost-build` generates the message structs.

fn main() {
    let proto = "proto/onnx.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"]).expect("the vendored onnx.proto parses");
    prost_build::Config::new()
        // weights decode as slices of the file's buffer instead of copies (import_file)
        .bytes([".onnx.TensorProto.raw_data"])
        .compile_fds(descriptors)
        .expect("prost-build generates Rust code for onnx.proto");
}
