//! `TensorProto` → [`Tensor`]: element-type mapping, the typed and raw storage forms, and
//! external data files (kept inside the model's directory, ranges checked against the file).
//! Half-precision data is widened to f32 here: kiln computes f16 models in f32.

use crate::budget::byte_size;
use crate::error::OnnxError;
use crate::proto::tensor_proto::{DataLocation, DataType};
use crate::proto::TensorProto;
use half::f16;
use kiln_ir::tensor::checked_numel;
use kiln_ir::{DType, Tensor, TensorData, TensorType};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

/// The ONNX name of an element type code (`FLOAT`, `INT4`, ...), for messages.
pub(crate) fn onnx_dtype_name(code: i32) -> String {
    match DataType::try_from(code) {
        Ok(t) => t.as_str_name().to_string(),
        Err(_) => format!("<unknown element type {code}>"),
    }
}

/// The IR dtype holding ONNX element type `code`. FLOAT16 maps to f32 (kiln widens half
/// precision on import); types the IR has no room for are an error naming the type.
pub(crate) fn dtype_from_onnx(code: i32) -> Result<DType, String> {
    match DataType::try_from(code) {
        Ok(DataType::Float) | Ok(DataType::Float16) => Ok(DType::F32),
        Ok(DataType::Uint8) => Ok(DType::U8),
        Ok(DataType::Int8) => Ok(DType::I8),
        Ok(DataType::Int32) => Ok(DType::I32),
        Ok(DataType::Int64) => Ok(DType::I64),
        Ok(DataType::Bool) => Ok(DType::Bool),
        _ => Err(format!(
            "element type {} is not supported (kiln imports FLOAT, FLOAT16 (computed as f32), \
             UINT8, INT8, INT32, INT64, BOOL)",
            onnx_dtype_name(code)
        )),
    }
}

/// The IR type a tensor declares, checked without touching its data: dims non-negative,
/// element type supported, element count and byte size within what a `usize` counts.
/// Callers check this (and the memory budget) before decoding, so nothing is allocated for
/// a tensor that cannot exist.
pub(crate) fn declared_type(proto: &TensorProto) -> Result<TensorType, OnnxError> {
    let name = proto.name();
    let err = |msg: String| OnnxError::Tensor {
        tensor: name.to_string(),
        msg,
    };
    if proto.segment.is_some() {
        return Err(err("segmented tensors are not supported".into()));
    }
    let shape = proto
        .dims
        .iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| err(format!("negative dimension {d} in {:?}", proto.dims)))
        })
        .collect::<Result<Vec<usize>, _>>()?;
    let dtype = dtype_from_onnx(proto.data_type()).map_err(err)?;
    byte_size(&shape, dtype.size_bytes()).map_err(err)?;
    Ok(TensorType::new(dtype, shape))
}

/// Read a tensor, resolving external data relative to `model_dir`.
pub(crate) fn tensor_from_proto(
    proto: &TensorProto,
    model_dir: Option<&Path>,
) -> Result<Tensor, OnnxError> {
    let name = proto.name();
    let err = |msg: String| OnnxError::Tensor {
        tensor: name.to_string(),
        msg,
    };
    let TensorType { dtype, shape, .. } = declared_type(proto)?;
    let numel = checked_numel(&shape).expect("declared_type checked the element count");
    let code = proto.data_type();
    let is_f16 = code == DataType::Float16 as i32;

    let external = proto.data_location() == DataLocation::External;
    let external_bytes;
    let raw: Option<&[u8]> = if external {
        let elem = if is_f16 { 2 } else { dtype.size_bytes() };
        let expected = numel
            .checked_mul(elem)
            .expect("declared_type checked the byte size at ≥ this width");
        external_bytes = read_external_data(proto, model_dir, expected).map_err(err)?;
        Some(&external_bytes)
    } else {
        proto.raw_data.as_deref()
    };
    let data = match raw {
        Some(bytes) => data_from_le_bytes(bytes, dtype, is_f16, numel).map_err(err)?,
        None => data_from_typed_fields(proto, dtype, is_f16, numel).map_err(err)?,
    };
    Tensor::new(shape, data).map_err(|e| err(e.to_string()))
}

/// Decode `numel` little-endian elements (the `raw_data` / external-file layout).
fn data_from_le_bytes(
    bytes: &[u8],
    dtype: DType,
    is_f16: bool,
    numel: usize,
) -> Result<TensorData, String> {
    let elem = if is_f16 { 2 } else { dtype.size_bytes() };
    let expected = numel
        .checked_mul(elem)
        .ok_or_else(|| "byte size overflows".to_string())?;
    if bytes.len() != expected {
        return Err(format!(
            "raw data has {} bytes, expected {expected} ({numel} elements of {elem} bytes)",
            bytes.len()
        ));
    }
    fn chunks<const N: usize>(bytes: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        bytes
            .chunks_exact(N)
            .map(|c| c.try_into().expect("chunks_exact yields N bytes"))
    }
    Ok(match dtype {
        DType::F32 if is_f16 => TensorData::F32(
            chunks::<2>(bytes)
                .map(|b| f16::from_le_bytes(b).to_f32())
                .collect(),
        ),
        DType::F32 => TensorData::F32(chunks::<4>(bytes).map(f32::from_le_bytes).collect()),
        DType::U8 => TensorData::U8(bytes.to_vec()),
        DType::I8 => TensorData::I8(bytes.iter().map(|&b| b as i8).collect()),
        DType::I32 => TensorData::I32(chunks::<4>(bytes).map(i32::from_le_bytes).collect()),
        DType::I64 => TensorData::I64(chunks::<8>(bytes).map(i64::from_le_bytes).collect()),
        DType::Bool => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
        DType::F16 => unreachable!("dtype_from_onnx never yields f16"),
    })
}

/// Decode the typed repeated fields (`float_data`, `int32_data`, `int64_data`).
fn data_from_typed_fields(
    proto: &TensorProto,
    dtype: DType,
    is_f16: bool,
    numel: usize,
) -> Result<TensorData, String> {
    let check_len = |field: &str, len: usize| {
        if len == numel {
            Ok(())
        } else if len == 0 {
            Err(format!(
                "has no data ({numel} elements expected, {field} is empty)"
            ))
        } else {
            Err(format!(
                "{field} has {len} elements, the shape needs {numel}"
            ))
        }
    };
    let int32_in = |lo: i32, hi: i32| -> Result<(), String> {
        check_len("int32_data", proto.int32_data.len())?;
        match proto.int32_data.iter().find(|&&v| v < lo || v > hi) {
            Some(v) => Err(format!("int32_data value {v} is out of range [{lo}, {hi}]")),
            None => Ok(()),
        }
    };
    Ok(match dtype {
        DType::F32 if is_f16 => {
            // FLOAT16 values are stored bit-wise in int32_data.
            int32_in(0, u16::MAX as i32)?;
            TensorData::F32(
                proto
                    .int32_data
                    .iter()
                    .map(|&b| f16::from_bits(b as u16).to_f32())
                    .collect(),
            )
        }
        DType::F32 => {
            check_len("float_data", proto.float_data.len())?;
            TensorData::F32(proto.float_data.clone())
        }
        DType::U8 => {
            int32_in(0, u8::MAX as i32)?;
            TensorData::U8(proto.int32_data.iter().map(|&v| v as u8).collect())
        }
        DType::I8 => {
            int32_in(i8::MIN as i32, i8::MAX as i32)?;
            TensorData::I8(proto.int32_data.iter().map(|&v| v as i8).collect())
        }
        DType::I32 => {
            check_len("int32_data", proto.int32_data.len())?;
            TensorData::I32(proto.int32_data.clone())
        }
        DType::Bool => {
            int32_in(0, 1)?;
            TensorData::Bool(proto.int32_data.iter().map(|&v| v != 0).collect())
        }
        DType::I64 => {
            check_len("int64_data", proto.int64_data.len())?;
            TensorData::I64(proto.int64_data.clone())
        }
        DType::F16 => unreachable!("dtype_from_onnx never yields f16"),
    })
}

/// The bytes of an externally stored tensor, which must be the `expected` count its shape
/// and element type call for (checked before reading, so a wrong `length` or a huge file
/// allocates nothing). The file must lie inside `model_dir` (no absolute paths, no `..`, no
/// symlink leading out) and the range inside the file.
fn read_external_data(
    proto: &TensorProto,
    model_dir: Option<&Path>,
    expected: usize,
) -> Result<Vec<u8>, String> {
    let mut location = None;
    let mut offset: u64 = 0;
    let mut length: Option<u64> = None;
    for entry in &proto.external_data {
        let parse_u64 = |what: &str| {
            entry.value().parse::<u64>().map_err(|_| {
                format!(
                    "external data {what} '{}' is not a non-negative integer",
                    entry.value()
                )
            })
        };
        match entry.key() {
            "location" => location = Some(entry.value()),
            "offset" => offset = parse_u64("offset")?,
            "length" => length = Some(parse_u64("length")?),
            // "checksum" (SHA-1) and unknown keys do not change where the bytes are.
            _ => {}
        }
    }
    let location = location.ok_or("external data has no 'location'")?;
    let model_dir = model_dir.ok_or_else(|| {
        format!("data is stored in external file '{location}', but the model was loaded from bytes without a directory")
    })?;
    let path = resolve_external_path(model_dir, location)?;
    let mut file =
        File::open(&path).map_err(|e| format!("external data file '{}': {e}", path.display()))?;
    let size = file
        .metadata()
        .map_err(|e| format!("external data file '{}': {e}", path.display()))?
        .len();
    let length = match length {
        Some(l) => l,
        None => size.checked_sub(offset).ok_or_else(|| {
            format!(
                "external data offset {offset} is beyond the end of '{location}' ({size} bytes)"
            )
        })?,
    };
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(format!(
            "external data range offset {offset} + length {length} exceeds '{location}' ({size} bytes)"
        ));
    }
    if length != expected as u64 {
        return Err(format!(
            "external data in '{location}' (offset {offset}) has {length} bytes, expected \
             {expected} for the tensor's shape and element type"
        ));
    }
    let mut bytes = vec![0u8; expected];
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut bytes))
        .map_err(|e| format!("reading external data file '{}': {e}", path.display()))?;
    Ok(bytes)
}

/// `model_dir/location`, refusing anything that could name a file outside `model_dir`.
pub(crate) fn resolve_external_path(model_dir: &Path, location: &str) -> Result<PathBuf, String> {
    let rel = Path::new(location);
    if location.is_empty() {
        return Err("external data location is empty".into());
    }
    if rel.is_absolute() || rel.has_root() {
        return Err(format!(
            "external data location '{location}' is absolute; it must be relative to the model's directory"
        ));
    }
    if let Some(c) = rel
        .components()
        .find(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "external data location '{location}' leaves the model's directory (component {c:?})"
        ));
    }
    let joined = model_dir.join(rel);
    // A symlink inside the directory could still point outside it: compare canonical paths.
    let dir = model_dir
        .canonicalize()
        .map_err(|e| format!("model directory '{}': {e}", model_dir.display()))?;
    let file = joined.canonicalize().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "external data file '{location}' does not exist (looked in '{}')",
                model_dir.display()
            )
        } else {
            format!("external data file '{}': {e}", joined.display())
        }
    })?;
    if !file.starts_with(&dir) {
        return Err(format!(
            "external data location '{location}' resolves to '{}', outside the model's directory",
            file.display()
        ));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::StringStringEntryProto;
    use crate::testutil::{temp_dir, tensor_f32, tensor_i32_field, tensor_raw};
    use crate::{read_tensor_proto, OnnxError};
    use prost::Message;

    fn external(name: &str, dims: &[i64], entries: &[(&str, &str)]) -> TensorProto {
        TensorProto {
            name: Some(name.into()),
            dims: dims.to_vec(),
            data_type: Some(DataType::Float as i32),
            data_location: Some(DataLocation::External as i32),
            external_data: entries
                .iter()
                .map(|(k, v)| StringStringEntryProto {
                    key: Some(k.to_string()),
                    value: Some(v.to_string()),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn f32_le(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn message(r: Result<Tensor, OnnxError>) -> String {
        r.expect_err("the tensor is rejected").to_string()
    }

    #[test]
    fn typed_and_raw_storage_read_the_same_values() {
        let values = [1.5f32, -2.0, 0.25, 8.0, 0.0, -0.5];
        let typed = tensor_from_proto(&tensor_f32("w", &[2, 3], &values), None).unwrap();
        let raw = tensor_from_proto(
            &tensor_raw("w", DataType::Float, &[2, 3], f32_le(&values)),
            None,
        )
        .unwrap();
        assert_eq!(typed, raw);
        assert_eq!(typed.shape(), &[2, 3]);
        assert_eq!(typed.as_f32().unwrap(), &values);
        let i8s = tensor_from_proto(
            &tensor_raw("q", DataType::Int8, &[3], vec![0xff, 0x80, 0x7f]),
            None,
        )
        .unwrap();
        assert_eq!(i8s.data(), &TensorData::I8(vec![-1, -128, 127]));
        let bools =
            tensor_from_proto(&tensor_i32_field("b", DataType::Bool, &[2], &[1, 0]), None).unwrap();
        assert_eq!(bools.data(), &TensorData::Bool(vec![true, false]));
    }

    #[test]
    fn half_precision_is_widened_to_f32() {
        // IEEE binary16: 0x3C00 = 1.0, 0xC000 = -2.0, 0x3800 = 0.5.
        let bits = [0x3C00u16, 0xC000, 0x3800];
        let raw: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
        let from_raw =
            tensor_from_proto(&tensor_raw("h", DataType::Float16, &[3], raw), None).unwrap();
        let typed: Vec<i32> = bits.iter().map(|&b| b as i32).collect();
        let from_typed = tensor_from_proto(
            &tensor_i32_field("h", DataType::Float16, &[3], &typed),
            None,
        )
        .unwrap();
        assert_eq!(from_raw.as_f32().unwrap(), &[1.0, -2.0, 0.5]);
        assert_eq!(from_raw, from_typed);
    }

    #[test]
    fn bad_data_is_an_error_naming_the_tensor() {
        let short = message(tensor_from_proto(
            &tensor_raw("w", DataType::Float, &[2, 2], vec![0; 12]),
            None,
        ));
        assert!(
            short.starts_with("tensor 'w': raw data has 12 bytes, expected 16"),
            "{short}"
        );
        let missing = message(tensor_from_proto(&tensor_f32("w", &[2], &[]), None));
        assert!(missing.contains("has no data"), "{missing}");
        let range = message(tensor_from_proto(
            &tensor_i32_field("z", DataType::Uint8, &[1], &[300]),
            None,
        ));
        assert!(range.contains("300 is out of range [0, 255]"), "{range}");
        let int4 = message(tensor_from_proto(
            &tensor_raw("w", DataType::Int4, &[2], vec![0x21]),
            None,
        ));
        assert!(
            int4.contains("element type INT4 is not supported"),
            "{int4}"
        );
        let negative = message(tensor_from_proto(&tensor_f32("w", &[-1], &[]), None));
        assert!(negative.contains("negative dimension"), "{negative}");
    }

    #[test]
    fn test_data_tensors_decode_and_truncation_is_an_error() {
        let bytes = tensor_f32("x", &[2], &[3.0, 4.0]).encode_to_vec();
        assert_eq!(
            read_tensor_proto(&bytes).unwrap().as_f32().unwrap(),
            &[3.0, 4.0]
        );
        // Half the message ends inside the packed float_data field.
        let cut = &bytes[..bytes.len() / 2];
        assert!(matches!(read_tensor_proto(cut), Err(OnnxError::Decode(_))));
    }

    #[test]
    fn external_data_is_read_from_the_model_directory() {
        let dir = temp_dir("external");
        let values = [1.0f32, 2.0, 3.0, 4.0];
        let mut file = vec![0xAAu8; 8]; // 8 bytes of another tensor first
        file.extend(f32_le(&values));
        std::fs::write(dir.join("weights.bin"), &file).unwrap();
        let t = external(
            "w",
            &[2, 2],
            &[
                ("location", "weights.bin"),
                ("offset", "8"),
                ("length", "16"),
            ],
        );
        assert_eq!(
            tensor_from_proto(&t, Some(&dir)).unwrap().as_f32().unwrap(),
            &values
        );
        // Without a length the tensor runs to the end of the file.
        let t = external("w", &[4], &[("location", "./weights.bin"), ("offset", "8")]);
        assert_eq!(
            tensor_from_proto(&t, Some(&dir)).unwrap().as_f32().unwrap(),
            &values
        );
        // A range past the end of the file.
        let t = external(
            "w",
            &[4],
            &[
                ("location", "weights.bin"),
                ("offset", "16"),
                ("length", "16"),
            ],
        );
        let err = message(tensor_from_proto(&t, Some(&dir)));
        assert!(err.contains("exceeds 'weights.bin' (24 bytes)"), "{err}");
        let t = external("w", &[4], &[("location", "weights.bin"), ("offset", "40")]);
        assert!(message(tensor_from_proto(&t, Some(&dir))).contains("beyond the end"));
        // Without a model directory there is nowhere to look.
        let t = external("w", &[4], &[("location", "weights.bin")]);
        assert!(message(tensor_from_proto(&t, None)).contains("without a directory"));
        let t = external("w", &[4], &[("location", "missing.bin")]);
        let err = message(tensor_from_proto(&t, Some(&dir)));
        assert!(
            err.starts_with("tensor 'w': external data file 'missing.bin' does not exist"),
            "{err}"
        );
        // The range must hold exactly the tensor: checked before anything is read.
        let t = external("w", &[2], &[("location", "weights.bin"), ("length", "4")]);
        assert_eq!(
            message(tensor_from_proto(&t, Some(&dir))),
            "tensor 'w': external data in 'weights.bin' (offset 0) has 4 bytes, expected 8 for \
             the tensor's shape and element type"
        );
        // 2^40 declared elements against a 24-byte file: an error, not a 4 TiB buffer.
        let t = external("w", &[1 << 40], &[("location", "weights.bin")]);
        assert!(message(tensor_from_proto(&t, Some(&dir)))
            .contains("has 24 bytes, expected 4398046511104"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn declared_types_are_checked_without_reading_data() {
        let raw = |dims: &[i64], dtype| tensor_raw("w", dtype, dims, vec![]);
        assert_eq!(
            declared_type(&raw(&[1 << 20, 1 << 20], DataType::Float)).unwrap(),
            TensorType::new(DType::F32, vec![1 << 20, 1 << 20])
        );
        // FLOAT16 is stored as f32.
        assert_eq!(
            declared_type(&raw(&[3], DataType::Float16)).unwrap().dtype,
            DType::F32
        );
        let err = |dims: &[i64], dtype| declared_type(&raw(dims, dtype)).unwrap_err().to_string();
        assert_eq!(
            err(&[2, -1], DataType::Float),
            "tensor 'w': negative dimension -1 in [2, -1]"
        );
        assert_eq!(
            err(&[1 << 40, 1 << 40], DataType::Uint8),
            "tensor 'w': shape [1099511627776, 1099511627776] has more elements than fit in memory"
        );
        assert!(err(&[1 << 31, 1 << 31], DataType::Int64).contains("has more bytes than fit"));
        assert!(err(&[2], DataType::Double).contains("element type DOUBLE is not supported"));
    }

    #[test]
    fn external_paths_may_not_leave_the_model_directory() {
        let root = temp_dir("escape");
        let model_dir = root.join("model");
        std::fs::create_dir_all(model_dir.join("sub")).unwrap();
        std::fs::write(root.join("secret.bin"), f32_le(&[7.0])).unwrap();
        for location in ["../secret.bin", "sub/../../secret.bin"] {
            let t = external("w", &[1], &[("location", location)]);
            let err = message(tensor_from_proto(&t, Some(&model_dir)));
            assert!(
                err.contains("leaves the model's directory"),
                "{location}: {err}"
            );
        }
        let absolute = root.join("secret.bin").display().to_string();
        let t = external("w", &[1], &[("location", &absolute)]);
        assert!(message(tensor_from_proto(&t, Some(&model_dir))).contains("is absolute"));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(root.join("secret.bin"), model_dir.join("link.bin"))
                .unwrap();
            let t = external("w", &[1], &[("location", "link.bin")]);
            let err = message(tensor_from_proto(&t, Some(&model_dir)));
            assert!(err.contains("outside the model's directory"), "{err}");
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
