//! Loading models for the CLI: `.onnx` through the importer, `.kir` through the text parser,
//! with the file name attached to every error.

use anyhow::{bail, Context, Result};
use kiln_ir::Graph;
use kiln_onnx::ImportOptions;
use std::path::Path;

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

/// Load a model by extension; `input_shapes` fix dynamic dimensions of ONNX inputs.
pub fn load_model(path: &Path, input_shapes: &[(String, Vec<usize>)]) -> Result<Graph> {
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
}
