//! `.npy` and `.npz` tensor files (numpy's formats), for `kiln run` inputs and outputs and
//! for test data: `.npy` read (format versions 1–3) and write, `.npz` read (stored or
//! deflate zip members). Little-endian, C-order, the dtypes of [`DType`] only.

use crate::dtype::DType;
use crate::tensor::{checked_numel, Tensor, TensorData};
use half::f16;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// What was wrong with a `.npy` / `.npz` file.
#[derive(Debug, Error)]
pub enum NpyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a .npy file: it does not start with the magic bytes \\x93NUMPY")]
    BadMagic,
    #[error(
        "unsupported .npy format version {major}.{minor} (versions 1.0, 2.0 and 3.0 are supported)"
    )]
    UnsupportedVersion { major: u8, minor: u8 },
    #[error("malformed .npy header: {0}")]
    Header(String),
    #[error(
        "unsupported dtype '{descr}' (supported: <f4 <f2 |i1 |u1 <i4 <i8 |b1; convert with \
         arr.astype(np.float32) or another supported type)"
    )]
    UnsupportedDtype { descr: String },
    #[error(
        "big-endian dtype '{descr}' is not supported: save the array little-endian \
         (arr.astype(arr.dtype.newbyteorder('<')))"
    )]
    BigEndian { descr: String },
    #[error(
        "Fortran-order (column-major) arrays are not supported: save \
         np.ascontiguousarray(arr) instead"
    )]
    FortranOrder,
    #[error("truncated .npy data: expected {expected} bytes, got {got}")]
    Truncated { expected: usize, got: usize },
    #[error(".npy data has {extra} bytes more than its shape and dtype call for")]
    TrailingBytes { extra: usize },
    #[error("malformed .npz archive: {0}")]
    Zip(String),
    #[error(".npz member '{name}' uses compression method {method} (only stored (0) and deflate (8) are supported)")]
    UnsupportedCompression { name: String, method: u16 },
    #[error(".npz member '{name}': {source}")]
    Member { name: String, source: Box<NpyError> },
}

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// numpy aligns the start of the data to this many bytes (`numpy.lib.format.ARRAY_ALIGN`).
const ARRAY_ALIGN: usize = 64;

/// numpy leaves room in the header for the leading dimension to grow to this many digits
/// (`GROWTH_AXIS_MAX_DIGITS`); matching it makes our files byte-identical to `np.save`'s.
const GROWTH_AXIS_MAX_DIGITS: usize = 21;

/// The `descr` string numpy writes for a dtype.
pub fn descr_of(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "<f4",
        DType::F16 => "<f2",
        DType::I8 => "|i1",
        DType::U8 => "|u1",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::Bool => "|b1",
    }
}

/// The dtype of a `descr`: byte order `<` for multi-byte types, and any of `|`, `<`, `>`, `=`
/// for single bytes (where order means nothing).
fn dtype_of_descr(descr: &str) -> Result<DType, NpyError> {
    let mut chars = descr.chars();
    let order = chars.next();
    let kind: String = chars.collect();
    let dtype = match kind.as_str() {
        "f4" => DType::F32,
        "f2" => DType::F16,
        "i1" => DType::I8,
        "u1" => DType::U8,
        "i4" => DType::I32,
        "i8" => DType::I64,
        "b1" => DType::Bool,
        _ => {
            return Err(NpyError::UnsupportedDtype {
                descr: descr.to_string(),
            })
        }
    };
    let ok = match order {
        Some('<') => true,
        Some('|' | '=' | '>') if dtype.size_bytes() == 1 => true,
        Some('>') => {
            return Err(NpyError::BigEndian {
                descr: descr.to_string(),
            })
        }
        _ => false,
    };
    if ok {
        Ok(dtype)
    } else {
        Err(NpyError::UnsupportedDtype {
            descr: descr.to_string(),
        })
    }
}

/// Parse a `.npy` file's bytes.
pub fn read_npy(bytes: &[u8]) -> Result<Tensor, NpyError> {
    let header = read_header(bytes, bytes.len())?;
    decode_data(header.dtype, header.shape, &bytes[header.data_start..])
}

/// What a `.npy` header says: the element type, the shape, and where the data starts.
struct NpyHeader {
    dtype: DType,
    shape: Vec<usize>,
    data_start: usize,
}

/// Where the header dictionary of a `.npy` file whose first bytes are `prefix` lies:
/// `(start, end)`, checked against the length of the whole file (`file_len`, which may be
/// more than `prefix` holds). `prefix` needs at most the first 12 bytes.
fn header_span(prefix: &[u8], file_len: usize) -> Result<(usize, usize), NpyError> {
    if prefix.len() < MAGIC.len() || &prefix[..MAGIC.len()] != MAGIC {
        return Err(NpyError::BadMagic);
    }
    let (major, minor) = match prefix.get(6..8) {
        Some(&[major, minor]) => (major, minor),
        _ => {
            return Err(NpyError::Header(
                "file ends inside the version bytes".into(),
            ))
        }
    };
    // Version 1 has a 2-byte header length; 2 and 3 a 4-byte one (3 allows UTF-8 in it).
    let (header_len, header_start): (usize, usize) = match (major, minor) {
        (1, 0) => match prefix.get(8..10) {
            Some(&[a, b]) => (u16::from_le_bytes([a, b]) as usize, 10),
            _ => {
                return Err(NpyError::Header(
                    "file ends inside the header length".into(),
                ))
            }
        },
        (2, 0) | (3, 0) => match prefix.get(8..12) {
            Some(&[a, b, c, d]) => (u32::from_le_bytes([a, b, c, d]) as usize, 12),
            _ => {
                return Err(NpyError::Header(
                    "file ends inside the header length".into(),
                ))
            }
        },
        _ => return Err(NpyError::UnsupportedVersion { major, minor }),
    };
    let header_end = header_start
        .checked_add(header_len)
        .filter(|&end| end <= file_len)
        .ok_or_else(|| {
            NpyError::Header(format!(
                "header of {header_len} bytes runs past the end of the {file_len}-byte file"
            ))
        })?;
    Ok((header_start, header_end))
}

/// Parse the header of a `.npy` file of `file_len` bytes from its first bytes, which must
/// reach at least to the end of the header.
fn read_header(bytes: &[u8], file_len: usize) -> Result<NpyHeader, NpyError> {
    let (header_start, header_end) = header_span(bytes, file_len)?;
    let header_bytes = bytes
        .get(header_start..header_end)
        .ok_or_else(|| NpyError::Header("the header was not read completely".to_string()))?;
    let header: String = if bytes[6] == 3 {
        std::str::from_utf8(header_bytes)
            .map_err(|_| NpyError::Header("header is not valid UTF-8".into()))?
            .to_string()
    } else {
        // Versions 1 and 2 are latin-1.
        header_bytes.iter().map(|&b| b as char).collect()
    };
    let fields = parse_header(&header)?;
    if fields.fortran_order {
        return Err(NpyError::FortranOrder);
    }
    Ok(NpyHeader {
        dtype: dtype_of_descr(&fields.descr)?,
        shape: fields.shape,
        data_start: header_end,
    })
}

/// The data size a header calls for, or why it cannot exist.
fn data_size(dtype: DType, shape: &[usize]) -> Result<usize, NpyError> {
    checked_numel(shape)
        .and_then(|n| n.checked_mul(dtype.size_bytes()))
        .ok_or_else(|| NpyError::Header(format!("shape {shape:?} is too large")))
}

/// The data length must be exactly what the header calls for.
fn check_data_len(expected: usize, got: usize) -> Result<(), NpyError> {
    if got < expected {
        return Err(NpyError::Truncated { expected, got });
    }
    if got > expected {
        return Err(NpyError::TrailingBytes {
            extra: got - expected,
        });
    }
    Ok(())
}

fn decode_data(dtype: DType, shape: Vec<usize>, data: &[u8]) -> Result<Tensor, NpyError> {
    check_data_len(data_size(dtype, &shape)?, data.len())?;
    fn words<const N: usize, T>(data: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
        data.chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                f(a)
            })
            .collect()
    }
    let values = match dtype {
        DType::F32 => TensorData::F32(words(data, f32::from_le_bytes)),
        DType::F16 => TensorData::F16(words(data, f16::from_le_bytes)),
        DType::I8 => TensorData::I8(data.iter().map(|&b| b as i8).collect()),
        DType::U8 => TensorData::U8(data.to_vec()),
        DType::I32 => TensorData::I32(words(data, i32::from_le_bytes)),
        DType::I64 => TensorData::I64(words(data, i64::from_le_bytes)),
        // numpy reads any non-zero byte of a bool array as True.
        DType::Bool => TensorData::Bool(data.iter().map(|&b| b != 0).collect()),
    };
    Tensor::new(shape, values).map_err(|e| NpyError::Header(e.to_string()))
}

struct HeaderFields {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// The header is a Python dict literal such as
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
fn parse_header(text: &str) -> Result<HeaderFields, NpyError> {
    let mut p = PyLiteral {
        chars: text.chars().collect(),
        pos: 0,
    };
    p.expect('{')?;
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    loop {
        if p.eat('}') {
            break;
        }
        let key = p.string()?;
        p.expect(':')?;
        match key.as_str() {
            "descr" if descr.is_none() => {
                descr = Some(if p.peek() == Some('[') {
                    return Err(NpyError::UnsupportedDtype {
                        descr: "structured dtype".into(),
                    });
                } else {
                    p.string()?
                })
            }
            "fortran_order" if fortran_order.is_none() => fortran_order = Some(p.boolean()?),
            "shape" if shape.is_none() => shape = Some(p.tuple()?),
            _ => {
                return Err(NpyError::Header(format!(
                    "unexpected or repeated key '{key}'"
                )))
            }
        }
        if !p.eat(',') {
            p.expect('}')?;
            break;
        }
    }
    p.skip_ws();
    if p.pos < p.chars.len() {
        return Err(NpyError::Header("text after the header dictionary".into()));
    }
    let missing = |k: &str| NpyError::Header(format!("missing key '{k}'"));
    Ok(HeaderFields {
        descr: descr.ok_or_else(|| missing("descr"))?,
        fortran_order: fortran_order.ok_or_else(|| missing("fortran_order"))?,
        shape: shape.ok_or_else(|| missing("shape"))?,
    })
}

/// Just enough of Python's literal syntax for the header: strings, True/False, tuples of
/// integers.
struct PyLiteral {
    chars: Vec<char>,
    pos: usize,
}

impl PyLiteral {
    fn skip_ws(&mut self) {
        while self.chars.get(self.pos).is_some_and(|c| c.is_whitespace()) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.chars.get(self.pos).copied()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), NpyError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("'{c}'")))
        }
    }

    fn unexpected(&mut self, what: &str) -> NpyError {
        let found = match self.peek() {
            Some(c) => format!("'{c}'"),
            None => "the end of the header".to_string(),
        };
        NpyError::Header(format!(
            "expected {what} at character {}, found {found}",
            self.pos
        ))
    }

    fn string(&mut self) -> Result<String, NpyError> {
        let quote = match self.peek() {
            Some(q @ ('\'' | '"')) => q,
            _ => return Err(self.unexpected("a quoted string")),
        };
        self.pos += 1;
        let mut s = String::new();
        loop {
            match self.chars.get(self.pos) {
                None => return Err(NpyError::Header("unterminated string".into())),
                Some(&c) if c == quote => {
                    self.pos += 1;
                    return Ok(s);
                }
                Some(&c) => {
                    s.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn word(&mut self) -> String {
        self.skip_ws();
        let mut w = String::new();
        while let Some(&c) = self.chars.get(self.pos) {
            if !c.is_ascii_alphanumeric() {
                break;
            }
            w.push(c);
            self.pos += 1;
        }
        w
    }

    fn boolean(&mut self) -> Result<bool, NpyError> {
        match self.word().as_str() {
            "True" => Ok(true),
            "False" => Ok(false),
            w => Err(NpyError::Header(format!(
                "expected True or False, found '{w}'"
            ))),
        }
    }

    /// `()`, `(3,)`, `(2, 3)`; Python 2 wrote longs as `3L`.
    fn tuple(&mut self) -> Result<Vec<usize>, NpyError> {
        self.expect('(')?;
        let mut dims = Vec::new();
        loop {
            if self.eat(')') {
                return Ok(dims);
            }
            let w = self.word();
            let digits = w.strip_suffix('L').unwrap_or(&w);
            let d = digits.parse::<usize>().map_err(|_| {
                NpyError::Header(format!("expected a dimension in 'shape', found '{w}'"))
            })?;
            dims.push(d);
            if !self.eat(',') {
                self.expect(')')?;
                return Ok(dims);
            }
        }
    }
}

/// The header text numpy writes, including its growth padding.
fn header_text(dtype: DType, shape: &[usize]) -> String {
    let shape_repr = match shape {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        dims => {
            let parts: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
            format!("({})", parts.join(", "))
        }
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape_repr}, }}",
        descr_of(dtype)
    );
    if let Some(first) = shape.first() {
        let digits = first.to_string().len();
        header.push_str(&" ".repeat(GROWTH_AXIS_MAX_DIGITS.saturating_sub(digits)));
    }
    header
}

/// The bytes of a `.npy` file holding `t`, identical to what `np.save` writes: format 1.0
/// (2.0 if the header needs more than 65535 bytes), data aligned to 64 bytes.
pub fn write_npy(t: &Tensor) -> Vec<u8> {
    let header = header_text(t.dtype(), t.shape());
    let text_len = header.len() + 1; // + '\n'
    let (version, len_bytes) = if 10 + text_len + ARRAY_ALIGN <= u16::MAX as usize {
        (1u8, 2usize)
    } else {
        (2u8, 4usize)
    };
    let prefix = MAGIC.len() + 2 + len_bytes;
    // Like numpy, pad with 1..=64 spaces (never 0) before the closing newline.
    let pad = ARRAY_ALIGN - (prefix + text_len) % ARRAY_ALIGN;
    let total_header = text_len + pad;
    let mut out = Vec::with_capacity(prefix + total_header + t.byte_size());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        out.extend_from_slice(&(total_header as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(total_header as u32).to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    out.extend(std::iter::repeat_n(b' ', pad));
    out.push(b'\n');
    out.extend_from_slice(&t.to_le_bytes());
    out
}

/// Read a `.npy` file. The header is read and checked first, and the file's length against
/// the size it declares: a header claiming a huge shape, or a file far larger than its
/// shape, is an error before the data is read.
pub fn read_npy_file(path: impl AsRef<Path>) -> Result<Tensor, NpyError> {
    let path = path.as_ref();
    let io = |source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let file_len = usize::try_from(file.metadata().map_err(io)?.len())
        .map_err(|_| NpyError::Header("the file is larger than memory can address".into()))?;
    // The fixed prefix (magic, version, header length) is at most 12 bytes.
    let mut head = Vec::new();
    file.by_ref().take(12).read_to_end(&mut head).map_err(io)?;
    let (_, header_end) = header_span(&head, file_len)?;
    file.by_ref()
        .take((header_end - head.len().min(header_end)) as u64)
        .read_to_end(&mut head)
        .map_err(io)?;
    let header = read_header(&head, file_len)?;
    let expected = data_size(header.dtype, &header.shape)?;
    // The 12 bytes read first may already reach into the data (a tiny header).
    let data_len = file_len - header.data_start;
    check_data_len(expected, data_len)?;
    let mut data = head.split_off(header.data_start.min(head.len()));
    file.take(expected.saturating_sub(data.len()) as u64)
        .read_to_end(&mut data)
        .map_err(io)?;
    // The file may have shrunk since its length was read.
    check_data_len(expected, data.len())?;
    decode_data(header.dtype, header.shape, &data)
}

pub fn write_npy_file(path: impl AsRef<Path>, t: &Tensor) -> Result<(), NpyError> {
    let path = path.as_ref();
    std::fs::write(path, write_npy(t)).map_err(|source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read_file(path: &Path) -> Result<Vec<u8>, NpyError> {
    std::fs::read(path).map_err(|source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The arrays of a `.npz` file (as `np.savez` / `np.savez_compressed` write it), in archive
/// order, each named without its `.npy` suffix.
pub fn read_npz_file(path: impl AsRef<Path>) -> Result<Vec<(String, Tensor)>, NpyError> {
    read_npz(&read_file(path.as_ref())?)
}

/// Parse a `.npz` archive's bytes; see [`read_npz_file`].
pub fn read_npz(bytes: &[u8]) -> Result<Vec<(String, Tensor)>, NpyError> {
    let mut out = Vec::new();
    for entry in zip_entries(bytes)? {
        if entry.name.ends_with('/') {
            continue; // a directory entry
        }
        let member = |source: NpyError| NpyError::Member {
            name: entry.name.clone(),
            source: Box::new(source),
        };
        let data = entry_data(bytes, &entry)?;
        let tensor = read_npy(&data).map_err(member)?;
        let name = entry
            .name
            .strip_suffix(".npy")
            .unwrap_or(&entry.name)
            .to_string();
        out.push((name, tensor));
    }
    Ok(out)
}

/// One member as the central directory describes it.
struct ZipEntry {
    name: String,
    method: u16,
    flags: u16,
    crc32: u32,
    compressed_size: u64,
    uncompressed_size: u64,
    local_header_offset: u64,
}

fn zip_err(msg: impl Into<String>) -> NpyError {
    NpyError::Zip(msg.into())
}

/// Little-endian field reader that reports a truncated archive instead of panicking.
fn le(bytes: &[u8], at: usize, n: usize) -> Result<u64, NpyError> {
    let field = at
        .checked_add(n)
        .and_then(|end| bytes.get(at..end))
        .ok_or_else(|| {
            zip_err(format!(
                "truncated: a {n}-byte field at offset {at} is past the end"
            ))
        })?;
    Ok(field
        .iter()
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | b as u64))
}

const EOCD_SIG: u64 = 0x0605_4b50;
const ZIP64_EOCD_LOCATOR_SIG: u64 = 0x0706_4b50;
const ZIP64_EOCD_SIG: u64 = 0x0606_4b50;
const CENTRAL_SIG: u64 = 0x0201_4b50;
const LOCAL_SIG: u64 = 0x0403_4b50;

/// Read the central directory (found through the end-of-central-directory record, and its
/// zip64 form, which numpy's `savez` always asks Python's zipfile for).
fn zip_entries(bytes: &[u8]) -> Result<Vec<ZipEntry>, NpyError> {
    // The EOCD record is 22 bytes plus a comment of up to 65535 bytes at the very end.
    let lowest = bytes.len().saturating_sub(22 + 0xFFFF);
    let eocd = (lowest..=bytes.len().saturating_sub(22))
        .rev()
        .find(|&i| le(bytes, i, 4).ok() == Some(EOCD_SIG))
        .ok_or_else(|| zip_err("not a zip archive (no end-of-central-directory record)"))?;
    let mut count = le(bytes, eocd + 10, 2)?;
    let mut cd_size = le(bytes, eocd + 12, 4)?;
    let mut cd_offset = le(bytes, eocd + 16, 4)?;
    if count == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
        let locator = eocd
            .checked_sub(20)
            .filter(|&at| le(bytes, at, 4).ok() == Some(ZIP64_EOCD_LOCATOR_SIG))
            .ok_or_else(|| {
                zip_err("zip64 sizes without a zip64 end-of-central-directory locator")
            })?;
        let at = usize::try_from(le(bytes, locator + 8, 8)?)
            .map_err(|_| zip_err("zip64 record offset out of range"))?;
        if le(bytes, at, 4)? != ZIP64_EOCD_SIG {
            return Err(zip_err("bad zip64 end-of-central-directory signature"));
        }
        count = le(bytes, at + 32, 8)?;
        cd_size = le(bytes, at + 40, 8)?;
        cd_offset = le(bytes, at + 48, 8)?;
    }
    let cd_end = cd_offset
        .checked_add(cd_size)
        .filter(|&end| end <= bytes.len() as u64)
        .ok_or_else(|| zip_err("central directory runs past the end of the file"))?;
    let mut entries = Vec::new();
    let mut at = cd_offset as usize;
    for i in 0..count {
        if at as u64 >= cd_end || le(bytes, at, 4)? != CENTRAL_SIG {
            return Err(zip_err(format!(
                "central directory entry {i} is missing or corrupt"
            )));
        }
        let flags = le(bytes, at + 8, 2)? as u16;
        let method = le(bytes, at + 10, 2)? as u16;
        let crc32 = le(bytes, at + 16, 4)? as u32;
        let mut compressed_size = le(bytes, at + 20, 4)?;
        let mut uncompressed_size = le(bytes, at + 24, 4)?;
        let name_len = le(bytes, at + 28, 2)? as usize;
        let extra_len = le(bytes, at + 30, 2)? as usize;
        let comment_len = le(bytes, at + 32, 2)? as usize;
        let mut local_header_offset = le(bytes, at + 42, 4)?;
        let name_start = at + 46;
        let name_bytes = bytes
            .get(name_start..name_start + name_len)
            .ok_or_else(|| zip_err("truncated member name"))?;
        let name = String::from_utf8_lossy(name_bytes).into_owned();
        // zip64 extra field (id 1): 8-byte values for exactly those of uncompressed size,
        // compressed size and header offset whose 4-byte field holds 0xFFFFFFFF, in that order.
        let mut extra = name_start + name_len;
        let extra_end = extra + extra_len;
        while extra + 4 <= extra_end {
            let id = le(bytes, extra, 2)?;
            let size = le(bytes, extra + 2, 2)? as usize;
            if id == 1 {
                let mut field = extra + 4;
                for value in [
                    &mut uncompressed_size,
                    &mut compressed_size,
                    &mut local_header_offset,
                ] {
                    if *value == 0xFFFF_FFFF {
                        *value = le(bytes, field, 8)?;
                        field += 8;
                    }
                }
            }
            extra += 4 + size;
        }
        entries.push(ZipEntry {
            name,
            method,
            flags,
            crc32,
            compressed_size,
            uncompressed_size,
            local_header_offset,
        });
        at = extra_end + comment_len;
    }
    Ok(entries)
}

/// The uncompressed bytes of one member, CRC-checked.
fn entry_data(bytes: &[u8], e: &ZipEntry) -> Result<Vec<u8>, NpyError> {
    let member_err = |msg: String| NpyError::Member {
        name: e.name.clone(),
        source: Box::new(zip_err(msg)),
    };
    if e.flags & 1 != 0 {
        return Err(member_err("the member is encrypted".into()));
    }
    let at = usize::try_from(e.local_header_offset)
        .map_err(|_| member_err("offset out of range".into()))?;
    if le(bytes, at, 4)? != LOCAL_SIG {
        return Err(member_err("bad local header signature".into()));
    }
    // The local header repeats name and extra field with its own lengths.
    let name_len = le(bytes, at + 26, 2)? as usize;
    let extra_len = le(bytes, at + 28, 2)? as usize;
    let start = at + 30 + name_len + extra_len;
    let compressed = usize::try_from(e.compressed_size)
        .ok()
        .and_then(|n| start.checked_add(n))
        .and_then(|end| bytes.get(start..end))
        .ok_or_else(|| member_err("compressed data runs past the end of the archive".into()))?;
    let expected_len = usize::try_from(e.uncompressed_size)
        .map_err(|_| member_err("uncompressed size out of range".into()))?;
    let data = match e.method {
        0 => compressed.to_vec(),
        8 => miniz_oxide::inflate::decompress_to_vec_with_limit(compressed, expected_len)
            .map_err(|err| member_err(format!("corrupt deflate data ({:?})", err.status)))?,
        method => {
            return Err(NpyError::UnsupportedCompression {
                name: e.name.clone(),
                method,
            })
        }
    };
    if data.len() != expected_len {
        return Err(member_err(format!(
            "expected {expected_len} uncompressed bytes, got {}",
            data.len()
        )));
    }
    let crc = crc32(&data);
    if crc != e.crc32 {
        return Err(member_err(format!(
            "CRC mismatch (stored {:08x}, computed {crc:08x}): the archive is corrupt",
            e.crc32
        )));
    }
    Ok(data)
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320) as zip uses it.
fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut c = !0u32;
    for &b in data {
        c = TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(shape: &[usize], data: TensorData) -> Tensor {
        Tensor::new(shape.to_vec(), data).expect("test data matches its shape")
    }

    fn every_dtype() -> Vec<Tensor> {
        vec![
            tensor(
                &[2, 3],
                TensorData::F32(vec![
                    0.0,
                    -0.0,
                    1.5,
                    f32::INFINITY,
                    f32::MIN_POSITIVE,
                    -3e38,
                ]),
            ),
            tensor(&[], TensorData::F32(vec![f32::NAN])),
            tensor(
                &[3],
                TensorData::F16(vec![f16::from_f32(0.1), f16::MAX, f16::NEG_INFINITY]),
            ),
            tensor(&[2, 2], TensorData::I8(vec![-128, -1, 0, 127])),
            tensor(&[1, 4], TensorData::U8(vec![0, 1, 128, 255])),
            tensor(&[2], TensorData::I32(vec![i32::MIN, i32::MAX])),
            tensor(&[1, 1, 2], TensorData::I64(vec![i64::MIN, 1 << 53])),
            tensor(&[4], TensorData::Bool(vec![true, false, false, true])),
            tensor(&[0, 5], TensorData::F32(vec![])),
            tensor(&[123456789012, 0], TensorData::I64(vec![])),
        ]
    }

    #[test]
    fn every_dtype_round_trips_bit_exactly() {
        for t in every_dtype() {
            let bytes = write_npy(&t);
            assert_eq!(
                bytes.len() % ARRAY_ALIGN,
                t.byte_size() % ARRAY_ALIGN,
                "data starts 64-aligned"
            );
            let back = read_npy(&bytes).unwrap();
            assert!(back.bitwise_eq(&t), "{t:?} came back as {back:?}");
        }
        // A header longer than 65535 bytes (only possible with thousands of dimensions)
        // switches to format 2.0 and its 4-byte length.
        let many_dims = Tensor::zeros(DType::U8, vec![1; 30_000]).unwrap();
        let bytes = write_npy(&many_dims);
        assert_eq!(bytes[6..8], [2, 0]);
        assert_eq!(bytes.len() % ARRAY_ALIGN, 1);
        assert!(read_npy(&bytes).unwrap().bitwise_eq(&many_dims));
    }

    /// The bytes of `np.save(f, np.arange(6, dtype=np.float32).reshape(2, 3))`, spelled out
    /// from the format description (numpy/lib/format.py): magic, version 1.0, header length
    /// 118 (u16 LE), the dict, 20 spaces of growth room (21 digits minus the one of "2"),
    /// padding so that 10 + 118 = 128 is a multiple of 64, a newline, then the data.
    #[test]
    fn writes_what_numpy_writes() {
        let t = Tensor::from_f32(vec![2, 3], (0..6).map(|i| i as f32).collect()).unwrap();
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        let mut expected = b"\x93NUMPY\x01\x00".to_vec();
        expected.extend(118u16.to_le_bytes());
        expected.extend(dict.as_bytes());
        expected.extend(vec![b' '; 118 - dict.len() - 1]);
        expected.push(b'\n');
        for i in 0..6 {
            expected.extend((i as f32).to_le_bytes());
        }
        assert_eq!(write_npy(&t), expected);
        // Scalars and 1-D shapes use Python's tuple spelling; a scalar gets no growth room.
        let scalar = write_npy(&Tensor::scalar_f32(1.0));
        let dict = b"{'descr': '<f4', 'fortran_order': False, 'shape': (), }";
        assert_eq!(&scalar[10..10 + dict.len()], dict);
        assert!(scalar[10 + dict.len()..127].iter().all(|&b| b == b' '));
        assert_eq!(scalar[127..], [b'\n', 0, 0, 0x80, 0x3f]);
        let bools = tensor(&[3], TensorData::Bool(vec![true; 3]));
        let text = String::from_utf8_lossy(&write_npy(&bools)).into_owned();
        assert!(
            text.contains("{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }"),
            "{text:?}"
        );
    }

    /// Version 2.0 and 3.0 headers carry a 4-byte length.
    #[test]
    fn reads_format_versions_2_and_3() {
        let t = tensor(&[2], TensorData::I32(vec![7, -7]));
        let v1 = write_npy(&t);
        let header = &v1[10..128];
        for major in [2u8, 3] {
            let mut v = b"\x93NUMPY".to_vec();
            v.extend([major, 0]);
            v.extend((header.len() as u32).to_le_bytes());
            v.extend(header);
            v.extend(&v1[128..]);
            assert!(read_npy(&v).unwrap().bitwise_eq(&t), "version {major}");
        }
    }

    /// A header written by hand in other legal spellings: double quotes, keys in another
    /// order, Python 2 longs, no trailing comma.
    #[test]
    fn reads_other_header_spellings() {
        let npy = |dict: &str, data: &[u8]| {
            let mut v = b"\x93NUMPY\x01\x00".to_vec();
            v.extend((dict.len() as u16).to_le_bytes());
            v.extend(dict.as_bytes());
            v.extend(data);
            v
        };
        let t = read_npy(&npy(
            "{\"shape\": (2L,), \"fortran_order\": False, \"descr\": \"|u1\"}\n",
            &[3, 4],
        ))
        .unwrap();
        assert_eq!(t.shape(), &[2]);
        assert_eq!(t.data(), &TensorData::U8(vec![3, 4]));
        // A single-byte type may carry any byte-order mark.
        let t = read_npy(&npy(
            "{'descr': '<i1', 'fortran_order': False, 'shape': (1, 1)}",
            &[0xFF],
        ))
        .unwrap();
        assert_eq!(t.data(), &TensorData::I8(vec![-1]));
    }

    fn with_header(dict: &str, data: &[u8]) -> Vec<u8> {
        let mut v = b"\x93NUMPY\x01\x00".to_vec();
        v.extend((dict.len() as u16).to_le_bytes());
        v.extend(dict.as_bytes());
        v.extend(data);
        v
    }

    #[test]
    fn malformed_files_name_the_problem() {
        let err = |bytes: &[u8]| read_npy(bytes).unwrap_err().to_string();
        assert_eq!(
            err(b"PK\x03\x04"),
            "not a .npy file: it does not start with the magic bytes \\x93NUMPY"
        );
        assert_eq!(
            err(b"\x93NUMPY\x04\x00\x00\x00"),
            "unsupported .npy format version 4.0 (versions 1.0, 2.0 and 3.0 are supported)"
        );
        assert_eq!(
            err(b"\x93NUMPY\x01\x00\xff\x00{"),
            "malformed .npy header: header of 255 bytes runs past the end of the 11-byte file"
        );
        assert_eq!(
            err(&with_header("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", &[0; 16])),
            "Fortran-order (column-major) arrays are not supported: save np.ascontiguousarray(arr) instead"
        );
        assert_eq!(
            err(&with_header(
                "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }",
                &[0; 4]
            )),
            "big-endian dtype '>f4' is not supported: save the array little-endian \
             (arr.astype(arr.dtype.newbyteorder('<')))"
        );
        assert!(matches!(
            read_npy(&with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", &[0; 8])),
            Err(NpyError::UnsupportedDtype { descr }) if descr == "<f8"
        ));
        assert!(err(&with_header(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }",
            &[0; 8]
        ))
        .starts_with("unsupported dtype '<f8' (supported: <f4 <f2 |i1 |u1 <i4 <i8 |b1;"));
        assert!(matches!(
            read_npy(&with_header(
                "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }",
                &[0; 4]
            )),
            Err(NpyError::UnsupportedDtype { .. })
        ));
        assert_eq!(
            err(&with_header(
                "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }",
                &[0; 20]
            )),
            "truncated .npy data: expected 24 bytes, got 20"
        );
        assert_eq!(
            err(&with_header(
                "{'descr': '<i4', 'fortran_order': False, 'shape': (1,), }",
                &[0; 5]
            )),
            ".npy data has 1 bytes more than its shape and dtype call for"
        );
        assert_eq!(
            err(&with_header("{'descr': '<i4', 'shape': (1,), }", &[0; 4])),
            "malformed .npy header: missing key 'fortran_order'"
        );
        assert_eq!(
            err(&with_header(
                "{'descr': '<i4', 'fortran_order': False, 'shape': (1, -2), }",
                &[]
            )),
            "malformed .npy header: expected a dimension in 'shape', found ''"
        );
        assert_eq!(
            err(&with_header(
                "{'descr': '<i4', 'fortran_order': False, 'shape': (1,), 'x': 1}",
                &[]
            )),
            "malformed .npy header: unexpected or repeated key 'x'"
        );
        assert_eq!(
            err(&with_header(
                "{'descr': '<i4', 'fortran_order': False, 'shape': (99999999999, 99999999999), }",
                &[]
            )),
            "malformed .npy header: shape [99999999999, 99999999999] is too large"
        );
    }

    /// Every prefix and every single-byte corruption of a valid file is either read or
    /// rejected; none panics.
    #[test]
    fn corrupted_files_never_panic() {
        let good = write_npy(&tensor(&[2, 2], TensorData::I32(vec![1, 2, 3, 4])));
        for end in 0..good.len() {
            assert!(read_npy(&good[..end]).is_err(), "prefix of {end} bytes");
        }
        for at in 0..good.len() {
            for value in [0u8, b'(', b')', b',', b'\'', 0xFF, b'9'] {
                let mut bad = good.clone();
                bad[at] = value;
                let _ = read_npy(&bad);
            }
        }
        for archive in [NPZ_STORED, NPZ_DEFLATE] {
            for end in 0..archive.len() {
                let _ = read_npz(&archive[..end]);
            }
            for at in 0..archive.len() {
                let mut bad = archive.to_vec();
                bad[at] ^= 0x5A;
                let _ = read_npz(&bad);
            }
        }
    }

    #[test]
    fn reads_npz_written_by_numpy() {
        let stored = read_npz(NPZ_STORED).unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].0, "x");
        assert_eq!(stored[0].1.shape(), &[2, 2]);
        assert_eq!(stored[0].1.as_f32().unwrap(), &[1.5, -2.0, 0.25, 1e-3]);

        let deflated = read_npz(NPZ_DEFLATE).unwrap();
        let names: Vec<&str> = deflated.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["idx", "mask"]);
        assert_eq!(deflated[0].1.as_i64().unwrap(), &[0, -1, 7]);
        assert_eq!(deflated[1].1.data(), &TensorData::Bool(vec![true, false]));
    }

    #[test]
    fn malformed_npz_names_the_problem() {
        let err = |bytes: &[u8]| read_npz(bytes).unwrap_err().to_string();
        assert_eq!(
            err(b"not a zip"),
            "malformed .npz archive: not a zip archive (no end-of-central-directory record)"
        );
        // Flip one byte of the stored array data: the CRC catches it.
        let data_at = NPZ_STORED
            .windows(4)
            .position(|w| w == 0x3fc0_0000u32.to_le_bytes())
            .unwrap();
        let mut bad = NPZ_STORED.to_vec();
        bad[data_at] ^= 1;
        let msg = err(&bad);
        assert!(
            msg.starts_with(".npz member 'x.npy': malformed .npz archive: CRC mismatch"),
            "{msg}"
        );
        // Method 12 (bzip2) in the central directory entry (offset 10 of the record).
        let central = NPZ_STORED
            .windows(4)
            .position(|w| w == b"PK\x01\x02")
            .unwrap();
        let mut bad = NPZ_STORED.to_vec();
        bad[central + 10] = 12;
        assert_eq!(
            err(&bad),
            ".npz member 'x.npy' uses compression method 12 (only stored (0) and deflate (8) are supported)"
        );
        // A member that is not a valid .npy: the error names it.
        let npy_at = NPZ_STORED.windows(6).position(|w| w == MAGIC).unwrap();
        let mut bad = NPZ_STORED.to_vec();
        bad[npy_at + 6] = 9;
        // (the CRC check runs first, so patch the stored CRC too)
        let new_crc = crc32(&bad[npy_at..npy_at + 144]);
        bad[central + 16..central + 20].copy_from_slice(&new_crc.to_le_bytes());
        assert_eq!(
            err(&bad),
            ".npz member 'x.npy': unsupported .npy format version 9.0 (versions 1.0, 2.0 and 3.0 are supported)"
        );
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        // The CRC-32 check value from the catalogue of parametrised CRC algorithms.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn files_round_trip_and_io_errors_name_the_path() {
        let dir = std::env::temp_dir().join(format!("kiln-npy-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.npy");
        let t = tensor(&[2], TensorData::I64(vec![5, -5]));
        write_npy_file(&path, &t).unwrap();
        assert!(read_npy_file(&path).unwrap().bitwise_eq(&t));
        std::fs::write(dir.join("a.npz"), NPZ_DEFLATE).unwrap();
        assert_eq!(read_npz_file(dir.join("a.npz")).unwrap().len(), 2);
        // A header declaring 2^40 elements over a file of a few bytes, and a file far
        // longer than its shape: both rejected from the header and the file length.
        let huge = with_header(
            "{'descr': '|u1', 'fortran_order': False, 'shape': (1099511627776,), }",
            &[1, 2, 3],
        );
        std::fs::write(dir.join("huge.npy"), huge).unwrap();
        assert_eq!(
            read_npy_file(dir.join("huge.npy")).unwrap_err().to_string(),
            "truncated .npy data: expected 1099511627776 bytes, got 3"
        );
        let mut long = write_npy(&t);
        long.extend(vec![0u8; 1 << 20]);
        std::fs::write(dir.join("long.npy"), long).unwrap();
        assert_eq!(
            read_npy_file(dir.join("long.npy")).unwrap_err().to_string(),
            ".npy data has 1048576 bytes more than its shape and dtype call for"
        );
        // Every prefix of a file reads as the in-memory reader reads it.
        let good = write_npy(&t);
        for end in 0..good.len() {
            std::fs::write(dir.join("cut.npy"), &good[..end]).unwrap();
            let from_file = read_npy_file(dir.join("cut.npy")).unwrap_err().to_string();
            assert_eq!(from_file, read_npy(&good[..end]).unwrap_err().to_string());
        }
        // A header short enough that the first 12 bytes read reach into the data.
        let tiny = with_header("{}", &[]);
        std::fs::write(dir.join("tiny.npy"), &tiny).unwrap();
        assert_eq!(
            read_npy_file(dir.join("tiny.npy")).unwrap_err().to_string(),
            read_npy(&tiny).unwrap_err().to_string()
        );
        let missing = dir.join("missing.npy");
        let msg = read_npy_file(&missing).unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!("{}: ", missing.display())),
            "{msg}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    /// `np.savez(f, x=np.array([[1.5, -2.0], [0.25, 1e-3]], dtype=np.float32))` (numpy 2.4:
    /// stored members, zip64 local headers).
    const NPZ_STORED: &[u8] = b"\
        PK\x03\x04-\x00\x00\x00\x00\x00\x00\x00!\x00@\x17\xdc\xe2\xff\xff\xff\xff\xff\xff\xff\
        \xff\x05\x00\x14\x00x.npy\x01\x00\x10\x00\x90\x00\x00\x00\x00\x00\x00\x00\x90\x00\x00\
        \x00\x00\x00\x00\x00\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shap\
        e': (2, 2), }                                                          \x0a\x00\x00\xc0?\
        \x00\x00\x00\xc0\x00\x00\x80>o\x12\x83:PK\x01\x02-\x03-\x00\x00\x00\x00\x00\x00\x00!\x00\
        @\x17\xdc\xe2\x90\x00\x00\x00\x90\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x00\x00\
        \x00\x00\x80\x01\x00\x00\x00\x00x.npyPK\x05\x06\x00\x00\x00\x00\x01\x00\x01\x003\x00\x00\
        \x00\xc7\x00\x00\x00\x00\x00";
    /// `np.savez_compressed(f, idx=np.array([0, -1, 7], dtype=np.int64),
    /// mask=np.array([True, False]))` (numpy 2.4: deflated members).
    const NPZ_DEFLATE: &[u8] = b"\
        PK\x03\x04-\x00\x00\x00\x08\x00\x00\x00!\x008R\xf4\x9b\xff\xff\xff\xff\xff\xff\xff\xff\
        \x07\x00\x14\x00idx.npy\x01\x00\x10\x00\x98\x00\x00\x00\x00\x00\x00\x00L\x00\x00\x00\x00\
        \x00\x00\x00\x9b\xec\x17\xea\x1b\x10\xc9\xc8P\xc6P\xad\x9e\x92Z\x9c\x5c\xa4n\xa5\xa0n\
        \x93i\xa1\xae\xa3\xa0\x9e\x96_TR\x94\x98\x17\x9f_\x94\x92\x0a\x12wK\xcc)N\x05\x8a\x17g$\
        \x16\xa4\x02\xf9\x1a\xc6:\x9a:\x0a\xb5\x0a\x14\x00.\x06(\xf8\x0f\x05\xecP>\x00PK\x03\x04\
        -\x00\x00\x00\x08\x00\x00\x00!\x00\xee\x19\xbb]\xff\xff\xff\xff\xff\xff\xff\xff\x08\x00\
        \x14\x00mask.npy\x01\x00\x10\x00\x82\x00\x00\x00\x00\x00\x00\x00F\x00\x00\x00\x00\x00\
        \x00\x00\x9b\xec\x17\xea\x1b\x10\xc9\xc8P\xc6P\xad\x9e\x92Z\x9c\x5c\xa4n\xa5\xa0^\x93d\
        \xa8\xae\xa3\xa0\x9e\x96_TR\x94\x98\x17\x9f_\x94\x92\x0a\x12wK\xcc)N\x05\x8a\x17g$\x16\
        \xa4\x02\xf9\x1aF:\x9a:\x0a\xb5\x0a\x14\x00.F\x06\x00PK\x01\x02-\x03-\x00\x00\x00\x08\
        \x00\x00\x00!\x008R\xf4\x9bL\x00\x00\x00\x98\x00\x00\x00\x07\x00\x00\x00\x00\x00\x00\x00\
        \x00\x00\x00\x00\x80\x01\x00\x00\x00\x00idx.npyPK\x01\x02-\x03-\x00\x00\x00\x08\x00\x00\
        \x00!\x00\xee\x19\xbb]F\x00\x00\x00\x82\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00\
        \x00\x00\x00\x80\x01\x85\x00\x00\x00mask.npyPK\x05\x06\x00\x00\x00\x00\x02\x00\x02\x00k\
        \x00\x00\x00\x05\x01\x00\x00\x00\x00";
}
