//! The ONNX protobuf messages (`ModelProto`, `GraphProto`, `TensorProto`, ...), generated at
//! build time from the vendored `proto/onnx.proto` (see `build.rs`).

#![allow(clippy::all, missing_docs, rustdoc::all)]

include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
