//! The pass registry: rule-set passes (one `passes/*.rules` file each, embedded at build time
//! or read from a directory at run time), plain passes, and the `-O` pipelines of
//! `passes/pipelines.sexp`.

use crate::error::OptError;
use crate::rules::{parse_rule_file, RuleSet};
use crate::sexp::{self, Sexp};
use std::path::Path;
use std::sync::OnceLock;

/// The rule files compiled into the binary, by their path in the repository.
pub const BUILTIN_RULE_FILES: &[(&str, &str)] = &[
    (
        "passes/simplify.rules",
        include_str!("../../../passes/simplify.rules"),
    ),
    (
        "passes/fold-bn.rules",
        include_str!("../../../passes/fold-bn.rules"),
    ),
    (
        "passes/bn-affine.rules",
        include_str!("../../../passes/bn-affine.rules"),
    ),
    (
        "passes/fuse-residual.rules",
        include_str!("../../../passes/fuse-residual.rules"),
    ),
    (
        "passes/fuse-activation.rules",
        include_str!("../../../passes/fuse-activation.rules"),
    ),
];

pub const BUILTIN_PIPELINES: (&str, &str) = (
    "passes/pipelines.sexp",
    include_str!("../../../passes/pipelines.sexp"),
);

/// Passes that are plain graph transformations, not rewrite rules.
pub const PLAIN_PASSES: &[(&str, &str)] = &[("dce", "Remove nodes no graph output depends on.")];

/// The built-in rule sets, parsed once.
pub fn builtin_rule_sets() -> &'static [RuleSet] {
    static SETS: OnceLock<Vec<RuleSet>> = OnceLock::new();
    SETS.get_or_init(|| {
        BUILTIN_RULE_FILES
            .iter()
            .map(|(file, text)| {
                parse_rule_file(file, text)
                    .unwrap_or_else(|e| panic!("built-in rule file does not parse (a build bug; `cargo test -p kiln-opt` catches it): {e}"))
            })
            .collect()
    })
}

/// Load the rule set of pass `name` from `dir/NAME.rules` (for editing rules without
/// rebuilding).
pub fn load_rule_set(dir: &Path, name: &str) -> Result<RuleSet, OptError> {
    let path = dir.join(format!("{name}.rules"));
    let text = std::fs::read_to_string(&path).map_err(|e| OptError::RuleFileIo {
        path: path.display().to_string(),
        msg: e.to_string(),
    })?;
    let set = parse_rule_file(&path.display().to_string(), &text)?;
    if set.name != name {
        return Err(OptError::RuleFile {
            file: path.display().to_string(),
            line: 1,
            col: 1,
            msg: format!("the file declares pass {}, expected {name}", set.name),
        });
    }
    Ok(set)
}

/// One pipeline of the pipelines file.
#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    pub name: String,
    pub description: String,
    pub passes: Vec<String>,
}

/// Parse a pipelines file: `(pipeline NAME "description" PASS ...)` forms.
pub fn parse_pipelines(
    file: &str,
    text: &str,
    known_passes: &[&str],
) -> Result<Vec<Pipeline>, OptError> {
    let err = |pos: sexp::Pos, msg: String| OptError::RuleFile {
        file: file.to_string(),
        line: pos.line,
        col: pos.col,
        msg,
    };
    let mut out = Vec::new();
    for form in sexp::parse_all(text).map_err(|e| err(e.pos, e.msg))? {
        let Sexp::List(items, pos) = &form else {
            return Err(err(
                form.pos(),
                format!("expected (pipeline NAME \"description\" PASS ...), found {form}"),
            ));
        };
        if items.first().and_then(Sexp::as_atom) != Some("pipeline") {
            return Err(err(
                *pos,
                format!("expected (pipeline NAME \"description\" PASS ...), found {form}"),
            ));
        }
        let name = items
            .get(1)
            .and_then(Sexp::as_atom)
            .ok_or_else(|| err(*pos, "the pipeline needs a name".into()))?;
        let Some(Sexp::Str(description, _)) = items.get(2) else {
            return Err(err(*pos, "the pipeline needs a description string".into()));
        };
        let mut passes = Vec::new();
        for p in &items[3..] {
            let pass = p
                .as_atom()
                .ok_or_else(|| err(p.pos(), format!("expected a pass name, found {p}")))?;
            if !known_passes.contains(&pass) {
                return Err(err(
                    p.pos(),
                    format!("unknown pass {pass} (known: {})", known_passes.join(", ")),
                ));
            }
            passes.push(pass.to_string());
        }
        if out.iter().any(|q: &Pipeline| q.name == name) {
            return Err(err(*pos, format!("pipeline {name} is defined twice")));
        }
        out.push(Pipeline {
            name: name.to_string(),
            description: description.clone(),
            passes,
        });
    }
    Ok(out)
}

/// The built-in pipelines, parsed once.
pub fn builtin_pipelines() -> &'static [Pipeline] {
    static PIPELINES: OnceLock<Vec<Pipeline>> = OnceLock::new();
    PIPELINES.get_or_init(|| {
        let known: Vec<&str> = crate::pass_names().iter().map(|(n, _)| *n).collect();
        parse_pipelines(BUILTIN_PIPELINES.0, BUILTIN_PIPELINES.1, &known)
            .unwrap_or_else(|e| panic!("built-in pipelines file does not parse (a build bug; `cargo test -p kiln-opt` catches it): {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_rule_files_parse_and_name_their_pass_after_the_file() {
        for (set, (file, _)) in builtin_rule_sets().iter().zip(BUILTIN_RULE_FILES) {
            assert_eq!(*file, format!("passes/{}.rules", set.name));
            assert!(!set.rules.is_empty(), "{file} has rules");
            assert!(!set.description.is_empty());
        }
    }

    #[test]
    fn builtin_pipelines_parse() {
        let pipelines = builtin_pipelines();
        assert!(pipelines.iter().any(|p| p.name == "O0"));
        assert!(pipelines
            .iter()
            .any(|p| p.name == "O1" && p.passes.contains(&"fold-bn".to_string())));
    }

    #[test]
    fn pipeline_files_report_unknown_passes_with_their_position() {
        let e = parse_pipelines(
            "p.sexp",
            "(pipeline O1 \"x\"\n  simplify frob)",
            &["simplify"],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "p.sexp:2:12: unknown pass frob (known: simplify)"
        );
    }
}
