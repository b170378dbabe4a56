//! Loading models for the CLI: `.onnx` through the importer (under the `--max-memory`
//! budget), `.kir` through the text parser, with the file name attached to every error.

use crate::ModelArgs;
use anyhow::{bail, Context, Result};
use kiln_ir::Graph;
use kiln_onnx::ImportOptions;

/// Parse `NAME=D0,D1,...` (the `--input-shape` value).
pub fn parse_input_shape(s: &str) -> Result<(String, Vec<usize>), String> {
    let (name, dims) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("expected NAME=D0,D1,..., got '{s}'"))?;
    if name.is_empty() {
        return Err(format!("missing input name in '{s}'"));
    }
    let dims = dims
        .split(',')
        .map(|d| {
            d.trim()
                .parse::<usize>()
                .map_err(|_| format!("'{d}' in '{s}' is not a non-negative integer dimension"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((name.to_string(), dims))
}

/// Parse a `--max-memory` value: bytes, or a number with a K, M, G or T suffix (powers of
/// 1024; `KiB`/`KB`-style spellings are accepted too, with the same meaning), or
/// `unlimited` (`u64::MAX`, which no model reaches).
pub fn parse_memory_size(s: &str) -> Result<u64, String> {
    let text = s.trim();
    if text.eq_ignore_ascii_case("unlimited") {
        return Ok(u64::MAX);
    }
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    if number.is_empty() {
        return Err(format!(
            "expected a size like 512M, 16G or 1073741824 (bytes), or 'unlimited', got '{s}'"
        ));
    }
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => {
            return Err(format!(
                "unknown unit '{unit}' in '{s}' (use K, M, G or T: powers of 1024)"
            ))
        }
    };
    let value: u64 = number
        .parse()
        .map_err(|_| format!("'{number}' in '{s}' does not fit in 64 bits"))?;
    value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("'{s}' is more than 2^64 bytes; use 'unlimited' for no limit"))
}

/// Load the model `args` names, by extension; `--input-shape` fixes dynamic dimensions of
/// ONNX inputs and `--max-memory` caps what the ONNX import may claim.
pub fn load_model(args: &ModelArgs) -> Result<Graph> {
    let path = args.model.as_path();
    let input_shapes = &args.input_shapes;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext {
        "kir" => {
            if !input_shapes.is_empty() {
                bail!(
                    "{}: --input-shape applies to ONNX models; a .kir file declares its input types",
                    path.display()
                );
            }
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let graph =
                kiln_ir::text::parse_graph(&text).with_context(|| format!("{}", path.display()))?;
            kiln_ir::verify(&graph).with_context(|| format!("{}", path.display()))?;
            Ok(graph)
        }
        _ => {
            let opts = ImportOptions {
                input_shapes: input_shapes.iter().cloned().collect(),
                max_memory: Some(args.max_memory),
                ..ImportOptions::default()
            };
            kiln_onnx::import_file(path, &opts).with_context(|| format!("{}", path.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_shape_syntax() {
        assert_eq!(
            parse_input_shape("x=1,3,320,320"),
            Ok(("x".to_string(), vec![1, 3, 320, 320]))
        );
        // names may contain '=' (ONNX names are arbitrary); the last '=' separates the dims
        assert_eq!(parse_input_shape("a=b=2"), Ok(("a=b".to_string(), vec![2])));
        assert!(parse_input_shape("x").is_err());
        assert!(parse_input_shape("x=1,-3").unwrap_err().contains("'-3'"));
        assert!(parse_input_shape("=1").is_err());
    }

    #[test]
    fn memory_size_syntax() {
        assert_eq!(parse_memory_size("0"), Ok(0));
        assert_eq!(parse_memory_size("1536"), Ok(1536));
        assert_eq!(parse_memory_size("1536B"), Ok(1536));
        assert_eq!(parse_memory_size("4K"), Ok(4 * 1024));
        assert_eq!(parse_memory_size("512m"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_memory_size("2GiB"), Ok(2 * 1024 * 1024 * 1024));
        assert_eq!(parse_memory_size("3 TB"), Ok(3 * 1024u64.pow(4)));
        assert_eq!(parse_memory_size("unlimited"), Ok(u64::MAX));
        assert_eq!(parse_memory_size("Unlimited"), Ok(u64::MAX));
        // The CLI's default spelling is the importer's default.
        assert_eq!(parse_memory_size("16G"), Ok(kiln_onnx::DEFAULT_MAX_MEMORY));
        // 2^24 T = 2^64 bytes: one past u64::MAX
        assert!(parse_memory_size("16777216T")
            .unwrap_err()
            .contains("more than 2^64"));
        assert!(parse_memory_size("16777215T").is_ok());
        assert!(parse_memory_size("99999999999999999999")
            .unwrap_err()
            .contains("64 bits"));
        assert!(parse_memory_size("12X")
            .unwrap_err()
            .contains("unknown unit 'X'"));
        assert!(parse_memory_size("1.5G").is_err());
        assert!(parse_memory_size("-1G").is_err());
        assert!(parse_memory_size("").is_err());
        assert!(parse_memory_size("G").is_err());
    }
}
