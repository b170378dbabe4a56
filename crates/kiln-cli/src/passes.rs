//! `kiln passes`, and the pass-selection flags `kiln dump` and `kiln opt` share (`-O0`/`-O1`,
//! `--passes a,b`, `--rules-dir`, `--verify`), checked against kiln-opt's pass registry.

use anyhow::{bail, Result};
use kiln_opt::{OptLevel, OptOptions};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct PassesArgs {}

/// `-O LEVEL` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// -O0: no optimization.
    #[value(name = "0")]
    O0,
    /// -O1: the default pipeline.
    #[value(name = "1")]
    O1,
}

impl From<Level> for OptLevel {
    fn from(level: Level) -> OptLevel {
        match level {
            Level::O0 => OptLevel::O0,
            Level::O1 => OptLevel::O1,
        }
    }
}

/// Which passes to run and how.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct PipelineArgs {
    /// Optimization level: `-O0` runs no pass, `-O1` the default pipeline (`kiln passes`
    /// lists what each runs). `kiln opt` defaults to -O1; `kiln dump` shows the imported IR
    /// (-O0) unless --after or --print-after-all ask for passes, which run -O1.
    #[arg(
        short = 'O',
        value_name = "LEVEL",
        value_enum,
        conflicts_with = "passes"
    )]
    pub level: Option<Level>,
    /// Run exactly these passes, in this order, instead of a pipeline: `--passes
    /// simplify,fold-bn` (names as listed by `kiln passes`; a pass may repeat).
    #[arg(long, value_name = "PASS,...", value_delimiter = ',')]
    pub passes: Option<Vec<String>>,
    /// Read each rule-set pass from DIR/NAME.rules instead of the copy built into kiln, to
    /// try edited rules without rebuilding.
    #[arg(long, value_name = "DIR")]
    pub rules_dir: Option<PathBuf>,
    /// Run the IR verifier on the result of every pass (always on in debug builds).
    #[arg(long)]
    pub verify: bool,
}

impl PipelineArgs {
    /// The passes to run: `--passes` if given, else the `-O` level's pipeline, else the
    /// pipeline of `default`. Every name is checked before anything runs.
    pub fn pass_list(&self, default: OptLevel) -> Result<Vec<String>> {
        let passes = match (&self.passes, self.level) {
            (Some(list), _) => list.clone(),
            (None, Some(level)) => pipeline_passes(level.into()),
            (None, None) => pipeline_passes(default),
        };
        for p in &passes {
            check_pass_name(p)?;
        }
        Ok(passes)
    }

    /// How the selection reads in messages: `-O1`, `--passes a,b`.
    pub fn describe(&self, default: OptLevel) -> String {
        match (&self.passes, self.level) {
            (Some(list), _) => format!("--passes {}", list.join(",")),
            (None, Some(level)) => format!("-{}", OptLevel::from(level).name()),
            (None, None) => format!("-{}", default.name()),
        }
    }

    pub fn options(&self) -> OptOptions {
        let defaults = OptOptions::default();
        OptOptions {
            verify: defaults.verify || self.verify,
            rules_dir: self.rules_dir.clone(),
            ..defaults
        }
    }
}

fn pipeline_passes(level: OptLevel) -> Vec<String> {
    kiln_opt::pipeline(level)
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// Names of every pass kiln knows.
pub fn known_passes() -> Vec<&'static str> {
    kiln_opt::pass_names().into_iter().map(|(n, _)| n).collect()
}

/// An error naming the known passes unless `name` is one of them.
pub fn check_pass_name(name: &str) -> Result<()> {
    let known = known_passes();
    if !known.contains(&name) {
        bail!(
            "unknown pass '{name}' (known passes: {}; `kiln passes` describes them)",
            known.join(", ")
        );
    }
    Ok(())
}

/// The first line of a description (rule files may wrap theirs).
fn one_line(text: &str) -> &str {
    text.lines().next().unwrap_or("").trim()
}

/// The `kiln passes` listing: one line per pass, then one per pipeline.
pub fn listing() -> String {
    let passes = kiln_opt::pass_names();
    let pipelines = kiln_opt::passes::builtin_pipelines();
    let width = passes
        .iter()
        .map(|(n, _)| n.len())
        .chain(pipelines.iter().map(|p| p.name.len() + 1))
        .max()
        .unwrap_or(0);
    let mut out = String::from(
        "passes (run a list with --passes a,b; see the IR after one with --after NAME):\n",
    );
    for (name, description) in &passes {
        out.push_str(&format!("  {name:<width$}  {}\n", one_line(description)));
    }
    out.push_str("pipelines (-O LEVEL):\n");
    for p in pipelines {
        let list = if p.passes.is_empty() {
            "(no passes)".to_string()
        } else {
            p.passes.join(", ")
        };
        let flag = format!("-{}", p.name);
        out.push_str(&format!(
            "  {flag:<width$}  {list}  — {}\n",
            one_line(&p.description)
        ));
    }
    out
}

pub fn passes(_args: PassesArgs) -> Result<()> {
    print!("{}", listing());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_has_one_line_per_pass_and_pipeline() {
        let text = listing();
        for name in known_passes() {
            let lines = text
                .lines()
                .filter(|l| l.split_whitespace().next() == Some(name))
                .count();
            assert_eq!(lines, 1, "{name} in\n{text}");
        }
        let o1 = text
            .lines()
            .find(|l| l.trim_start().starts_with("-O1"))
            .expect("-O1 listed");
        for pass in kiln_opt::pipeline(OptLevel::O1) {
            assert!(o1.contains(pass), "{o1}");
        }
        assert!(text
            .lines()
            .any(|l| l.trim_start().starts_with("-O0") && l.contains("(no passes)")));
    }

    #[test]
    fn pass_lists_come_from_flags_and_are_checked() {
        let none = PipelineArgs::default();
        assert!(none.pass_list(OptLevel::O0).unwrap().is_empty());
        assert_eq!(
            none.pass_list(OptLevel::O1).unwrap(),
            pipeline_passes(OptLevel::O1)
        );
        let explicit = PipelineArgs {
            passes: Some(vec!["fold-bn".into(), "dce".into()]),
            ..Default::default()
        };
        assert_eq!(
            explicit.pass_list(OptLevel::O1).unwrap(),
            ["fold-bn", "dce"]
        );
        assert_eq!(explicit.describe(OptLevel::O1), "--passes fold-bn,dce");
        let bad = PipelineArgs {
            passes: Some(vec!["fold-bn".into(), "frob".into()]),
            ..Default::default()
        };
        let err = bad.pass_list(OptLevel::O1).unwrap_err().to_string();
        assert!(
            err.starts_with("unknown pass 'frob' (known passes: "),
            "{err}"
        );
        assert!(err.contains("fold-bn") && err.contains("dce"), "{err}");
    }
}
