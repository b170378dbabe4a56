//! [`AotTarget`]: a Cranelift ISA for an explicit target triple and CPU feature list, with
//! kiln's flags (optimized for speed, position-independent code for any link).

use crate::jit::IsaFeatures;
use crate::CodegenError;
use cranelift_codegen::isa::{self, OwnedTargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use std::str::FromStr;
use target_lexicon::{Architecture, Triple};

/// The triples kiln emits objects for.
pub const SUPPORTED_TRIPLES: [&str; 2] = ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"];

/// What an object file is compiled for.
#[derive(Clone)]
pub struct AotTarget {
    isa: OwnedTargetIsa,
    features: IsaFeatures,
    cpu_features: Vec<String>,
}

impl std::fmt::Debug for AotTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AotTarget")
            .field("triple", &self.features.triple)
            .field("cpu_features", &self.cpu_features)
            .finish()
    }
}

impl AotTarget {
    /// `triple`: one of [`SUPPORTED_TRIPLES`]; `cpu_features`: LLVM-style names with a sign,
    /// e.g. `["+dotprod", "+i8mm"]` or `["+avx2", "+fma"]` (Cranelift's `has_*` settings,
    /// dots dropped: `+sse4.2` is `has_sse42`). x86-64 starts from SSE4.2 (kiln's kernels
    /// need SSE4.1), AArch64 from the base NEON ISA.
    pub fn new(triple: &str, cpu_features: &[String]) -> Result<AotTarget, CodegenError> {
        let unsupported = |m: String| CodegenError::UnsupportedTarget(m);
        let parsed = Triple::from_str(triple)
            .map_err(|e| unsupported(format!("target triple '{triple}': {e}")))?;
        let x86 = match parsed.architecture {
            Architecture::X86_64 => true,
            Architecture::Aarch64(_) => false,
            _ => {
                return Err(unsupported(format!(
                    "'{triple}': kiln emits objects for {}",
                    SUPPORTED_TRIPLES.join(" and ")
                )))
            }
        };
        let mut builder =
            isa::lookup(parsed.clone()).map_err(|e| unsupported(format!("'{triple}': {e}")))?;
        if x86 {
            for baseline in [
                "has_sse3",
                "has_ssse3",
                "has_sse41",
                "has_sse42",
                "has_popcnt",
            ] {
                builder
                    .enable(baseline)
                    .map_err(|e| unsupported(format!("{baseline}: {e}")))?;
            }
        }
        for feature in cpu_features {
            let (on, name) = match feature.strip_prefix('-') {
                Some(name) => (false, name),
                None => (true, feature.strip_prefix('+').unwrap_or(feature)),
            };
            let setting = format!("has_{}", name.replace(['.', '-'], "").to_lowercase());
            builder
                .set(&setting, if on { "true" } else { "false" })
                .map_err(|e| {
                    unsupported(format!(
                        "CPU feature '{feature}' for {triple} (Cranelift setting {setting}): {e}"
                    ))
                })?;
        }
        let flag_error = |e: settings::SetError| unsupported(e.to_string());
        let mut flags = settings::builder();
        flags.set("opt_level", "speed").map_err(flag_error)?;
        // the object may be linked into a position-independent executable or library
        flags.set("is_pic", "true").map_err(flag_error)?;
        flags
            .set(
                "enable_verifier",
                if kiln_ir::self_checks_enabled() {
                    "true"
                } else {
                    "false"
                },
            )
            .map_err(flag_error)?;
        let isa = builder
            .finish(settings::Flags::new(flags))
            .map_err(|e| unsupported(e.to_string()))?;
        let features = IsaFeatures::of(&*isa);
        Ok(AotTarget {
            isa,
            features,
            cpu_features: cpu_features.to_vec(),
        })
    }

    pub(crate) fn isa(&self) -> &OwnedTargetIsa {
        &self.isa
    }

    /// The extensions instruction selection will use (as the kernels see them).
    pub fn features(&self) -> &IsaFeatures {
        &self.features
    }

    pub fn triple(&self) -> &str {
        &self.features.triple
    }

    pub fn is_aarch64(&self) -> bool {
        self.features.triple.starts_with("aarch64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_reach_the_isa_flags() {
        let arm = AotTarget::new("aarch64-unknown-linux-gnu", &["+dotprod".into()]).unwrap();
        assert!(arm.features().has_dotprod && !arm.features().has_i8mm);
        let x86 = AotTarget::new("x86_64-unknown-linux-gnu", &[]).unwrap();
        assert!(x86.features().has_sse41 && !x86.features().has_avx);
        let err = AotTarget::new("aarch64-unknown-linux-gnu", &["+nonsense".into()]).unwrap_err();
        assert!(err.to_string().contains("nonsense"), "{err}");
        assert!(AotTarget::new("riscv64gc-unknown-linux-gnu", &[]).is_err());
    }
}
