//! The JIT: one Cranelift `JITModule` for the host ISA (detected by cranelift-native,
//! optimized for speed), which compiles CLIF functions to callable machine code and frees it
//! when dropped; plus [`IsaFeatures`], the instruction-set extensions the kernels select on.
//! Inside [`crate::aot::recording`] a `Jit` records the functions instead (built for the
//! ahead-of-time target), so the AOT build reuses every kernel generator unchanged.

use crate::CodegenError;
use cranelift_codegen::ir::{self, AbiParam, Function, Signature, UserFuncName, Value};
use cranelift_codegen::isa::{OwnedTargetIsa, TargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::FunctionBuilder;
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Linkage, Module};

/// How the JIT compiles.
#[derive(Clone, Debug, Default)]
pub struct JitOptions {
    /// Keep each function's final machine code listing (Cranelift's VCode disassembly), for
    /// `kiln dump`-style inspection and for tests that check instruction selection.
    pub capture_disassembly: bool,
    /// Run Cranelift's IR verifier on every function (default: in debug builds and under
    /// `KILN_VERIFY=1`, [`kiln_ir::self_checks_enabled`]).
    pub verify: Option<bool>,
}

/// Instruction-set extensions of the ISA a [`Jit`] compiles for, read back from the
/// Cranelift ISA flags (so they are exactly what instruction selection will use).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IsaFeatures {
    /// The target triple, e.g. `x86_64-unknown-linux-gnu`.
    pub triple: String,
    pub has_ssse3: bool,
    pub has_sse41: bool,
    pub has_avx: bool,
    pub has_avx2: bool,
    pub has_fma: bool,
    pub has_avx512f: bool,
    pub has_avx512vl: bool,
    /// AVX512-VNNI (`vpdpbusd` on xmm registers needs AVX512VL too).
    pub has_avx512vnni: bool,
    /// The VEX-encoded AVX-VNNI.
    pub has_avx_vnni: bool,
    /// AArch64 `sdot`/`udot`.
    pub has_dotprod: bool,
    /// AArch64 `usdot`/`smmla`.
    pub has_i8mm: bool,
}

impl IsaFeatures {
    pub(crate) fn of(isa: &dyn TargetIsa) -> IsaFeatures {
        let flags = isa.isa_flags();
        let on = |name: &str| {
            flags
                .iter()
                .any(|v| v.name == name && v.as_bool() == Some(true))
        };
        IsaFeatures {
            triple: isa.triple().to_string(),
            has_ssse3: on("has_ssse3"),
            has_sse41: on("has_sse41"),
            has_avx: on("has_avx"),
            has_avx2: on("has_avx2"),
            has_fma: on("has_fma"),
            has_avx512f: on("has_avx512f"),
            has_avx512vl: on("has_avx512vl"),
            has_avx512vnni: on("has_avx512vnni"),
            has_avx_vnni: on("has_avx_vnni"),
            has_dotprod: on("has_dotprod"),
            has_i8mm: on("has_i8mm"),
        }
    }

    /// Can `vpdpbusd` on 128-bit registers be selected (VEX AVX-VNNI, or EVEX AVX512-VNNI
    /// with AVX512VL)?
    pub fn has_xmm_vnni(&self) -> bool {
        (self.has_avx && self.has_avx_vnni) || (self.has_avx512vl && self.has_avx512vnni)
    }

    pub fn is_x86_64(&self) -> bool {
        self.triple.starts_with("x86_64")
    }
}

/// A JIT module for the host. Code it compiled stays valid until the `Jit` is dropped.
pub struct Jit {
    /// `None` only during `drop`, which hands the module to `free_memory`, and for a
    /// recording `Jit`.
    module: Option<JITModule>,
    /// Set when the `Jit` records functions for an ahead-of-time target instead of
    /// compiling them (`crate::aot`).
    recording: Option<Recording>,
    features: IsaFeatures,
    options: JitOptions,
    /// `(function name, VCode listing)` when `capture_disassembly` is on.
    disassembly: Vec<(String, String)>,
}

impl std::fmt::Debug for Jit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jit")
            .field("features", &self.features)
            .field("functions", &self.disassembly.len())
            .finish()
    }
}

impl Jit {
    /// A JIT for the machine this runs on. Fails on hosts Cranelift does not support and on
    /// x86-64 without SSE4.1, the baseline kiln's kernels assume (`roundps`, `pmovsx*`).
    ///
    /// Inside [`crate::aot::recording`] it is a recording `Jit` for the AOT target instead:
    /// its functions are kept as CLIF for the object file, never compiled or run.
    pub fn host(options: &JitOptions) -> Result<Jit, CodegenError> {
        if let Some(isa) = crate::aot::recording_isa() {
            return Ok(Jit {
                module: None,
                features: IsaFeatures::of(&*isa),
                recording: Some(Recording {
                    isa,
                    functions: Vec::new(),
                }),
                options: options.clone(),
                disassembly: Vec::new(),
            });
        }
        let isa = host_isa(options)?;
        let features = IsaFeatures::of(&*isa);
        if features.is_x86_64() && !features.has_sse41 {
            return Err(CodegenError::UnsupportedTarget(
                "x86-64 without SSE4.1 (kiln's baseline)".to_string(),
            ));
        }
        let module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
        Ok(Jit {
            module: Some(module),
            recording: None,
            features,
            options: options.clone(),
            disassembly: Vec::new(),
        })
    }

    pub fn features(&self) -> &IsaFeatures {
        &self.features
    }

    fn module(&self) -> &JITModule {
        self.module
            .as_ref()
            .expect("the module is only taken out in drop")
    }

    fn module_mut(&mut self) -> &mut JITModule {
        self.module
            .as_mut()
            .expect("the module is only taken out in drop")
    }

    /// The ISA functions are built for: the JIT's, or the recording's target.
    fn isa(&self) -> &dyn TargetIsa {
        match &self.recording {
            Some(recording) => &*recording.isa,
            None => self.module().isa(),
        }
    }

    /// The integer type of a pointer on the target.
    pub fn pointer_type(&self) -> ir::Type {
        self.target_config().pointer_type()
    }

    pub fn target_config(&self) -> cranelift_codegen::isa::TargetFrontendConfig {
        self.isa().frontend_config()
    }

    /// The signature of a kernel entry `extern "C" fn(p0, p1, …)` with `pointer_args`
    /// pointer arguments and no result.
    pub fn pointer_signature(&self, pointer_args: usize) -> Signature {
        let mut sig = Signature::new(self.isa().default_call_conv());
        let ptr = self.pointer_type();
        sig.params
            .extend(std::iter::repeat_n(AbiParam::new(ptr), pointer_args));
        sig
    }

    /// Compile `func` (built against [`Jit::pointer_signature`] or any C-ABI signature) and
    /// return the address of its machine code, valid while this `Jit` lives.
    pub fn compile(&mut self, name: &str, mut func: Function) -> Result<*const u8, CodegenError> {
        let fail = |message: String| CodegenError::Cranelift {
            function: name.to_string(),
            message,
        };
        if let Some(recording) = &mut self.recording {
            recording.functions.push((name.to_string(), func));
            return Ok(recorded_function_called as *const u8);
        }
        let capture = self.options.capture_disassembly;
        let module = self.module_mut();
        let id = module
            .declare_function(name, Linkage::Export, &func.signature)
            .map_err(|e| fail(e.to_string()))?;
        func.name = UserFuncName::user(0, id.as_u32());
        let mut ctx = Context::for_function(func);
        ctx.set_disasm(capture);
        module
            .define_function(id, &mut ctx)
            .map_err(|e| fail(format!("{e:?}")))?;
        let listing = ctx
            .compiled_code()
            .and_then(|code| code.vcode.clone())
            .filter(|_| capture);
        module
            .finalize_definitions()
            .map_err(|e| fail(e.to_string()))?;
        let code = module.get_finalized_function(id);
        if let Some(listing) = listing {
            self.disassembly.push((name.to_string(), listing));
        }
        Ok(code)
    }

    /// A kernel entry `extern "C" fn(p0, p1, …)` of `pointer_args` pointer-sized
    /// parameters and no result, its body built by `body(builder, parameters)`.
    pub(crate) fn define_kernel(
        &self,
        pointer_args: usize,
        body: impl FnOnce(&mut FunctionBuilder, &[Value]),
    ) -> Function {
        crate::clif::define_function(
            self.pointer_signature(pointer_args),
            self.target_config(),
            body,
        )
    }

    /// [`Jit::compile`], the entry returned as the function pointer type `F`.
    ///
    /// # Safety
    /// `F` must be an `extern "C"` function pointer type whose parameters and results are
    /// those of `func`'s signature. The pointer is valid only while this `Jit` lives.
    pub(crate) unsafe fn compile_as<F: Copy>(
        &mut self,
        name: &str,
        func: Function,
    ) -> Result<F, CodegenError> {
        const {
            assert!(std::mem::size_of::<F>() == std::mem::size_of::<*const u8>());
        }
        let code = self.compile(name, func)?;
        // SAFETY: `F` is a function pointer of the compiled signature (the caller's
        // promise), of the size of a code address (checked at compile time above).
        Ok(unsafe { std::mem::transmute_copy::<*const u8, F>(&code) })
    }

    /// The functions a recording `Jit` was handed, in order (empty for a compiling one).
    pub(crate) fn take_recorded(&mut self) -> Vec<(String, Function)> {
        self.recording
            .as_mut()
            .map(|r| std::mem::take(&mut r.functions))
            .unwrap_or_default()
    }

    /// The machine code listing of a compiled function, when `capture_disassembly` was on.
    pub fn disassembly(&self, name: &str) -> Option<&str> {
        self.disassembly
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, text)| text.as_str())
    }
}

impl Drop for Jit {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            // SAFETY: code addresses from `compile` are only handed to kernels that own this
            // `Jit` (and call through it only while alive), so no function from this module
            // can run or be called after this point.
            unsafe { module.free_memory() };
        }
    }
}

/// What a recording `Jit` keeps: the target it builds for and the functions, as CLIF.
struct Recording {
    isa: OwnedTargetIsa,
    functions: Vec<(String, Function)>,
}

/// The "code address" a recording `Jit` returns for a function: kernels built while
/// recording are taken apart by `crate::aot` and never run, so this is never called; if it
/// were, stopping is the only safe answer.
extern "C" fn recorded_function_called() {
    std::process::abort()
}

/// A kernel's hold on its finalized machine code: the [`Jit`] that compiled it, kept only
/// to free the code when the kernel is dropped and to read back its listings, and the
/// kernel's name (that of its main function). Unlike a `Jit` it is `Sync`, so a kernel can
/// be shared by the threads that run parts of it.
pub struct KernelCode {
    jit: Jit,
    name: String,
}

impl std::fmt::Debug for KernelCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelCode")
            .field("name", &self.name)
            .field("jit", &self.jit)
            .finish()
    }
}

impl KernelCode {
    /// Take the JIT whose functions are finalized (nothing more will be compiled in it);
    /// `name` names the kernel and its main function.
    pub fn new(jit: Jit, name: impl Into<String>) -> KernelCode {
        KernelCode {
            jit,
            name: name.into(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The machine code listing of a compiled function, when `capture_disassembly` was on.
    pub fn disassembly(&self, function: &str) -> Option<&str> {
        self.jit.disassembly(function)
    }

    /// The listing of the kernel's main function (the one named like the kernel).
    pub fn main_disassembly(&self) -> Option<&str> {
        self.jit.disassembly(&self.name)
    }

    /// The functions of a kernel built while recording (`crate::aot`), in build order.
    pub(crate) fn take_recorded(&mut self) -> Vec<(String, Function)> {
        self.jit.take_recorded()
    }
}

/// `name()` and `disassembly()` (of the main function) for a kernel type, and a `Debug`
/// that shows the name; `$code` is the path of the kernel's [`KernelCode`] field
/// (`code`, `window.code`).
macro_rules! kernel_identity {
    ($kernel:ident, $($code:ident).+) => {
        impl $kernel {
            /// The kernel's name: its op and shapes, as its machine code is named.
            pub fn name(&self) -> &str {
                self.$($code).+.name()
            }

            /// Cranelift's listing of the kernel's main function, when compiled with
            /// `capture_disassembly`.
            pub fn disassembly(&self) -> Option<&str> {
                self.$($code).+.main_disassembly()
            }
        }

        impl std::fmt::Debug for $kernel {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($kernel))
                    .field("name", &self.name())
                    .finish()
            }
        }
    };
}
pub(crate) use kernel_identity;

// SAFETY: a `Jit` is not `Sync` only because its `JITModule` keeps a `RefCell` (the symbol
// table used while linking). A shared `&KernelCode` reaches nothing but the `Jit`'s own
// listings (`Vec<(String, String)>`, read-only) and the name: no method of `KernelCode`
// touches the module, which is used again only by `Drop` (through `&mut`). The finalized
// code itself is immutable (mapped read + execute), so calling it from several threads at
// once is as safe as calling it from one, given the buffers each call is handed.
unsafe impl Sync for KernelCode {}

/// The host ISA with kiln's flags: optimized for speed, non-PIC (JIT code is not
/// relocated after finalization).
fn host_isa(options: &JitOptions) -> Result<OwnedTargetIsa, CodegenError> {
    let flag_error = |e: settings::SetError| CodegenError::UnsupportedTarget(e.to_string());
    let mut flags = settings::builder();
    flags.set("opt_level", "speed").map_err(flag_error)?;
    flags.set("is_pic", "false").map_err(flag_error)?;
    flags
        .set("use_colocated_libcalls", "false")
        .map_err(flag_error)?;
    let verify = options.verify.unwrap_or_else(kiln_ir::self_checks_enabled);
    flags
        .set("enable_verifier", if verify { "true" } else { "false" })
        .map_err(flag_error)?;
    let isa_builder =
        cranelift_native::builder().map_err(|m| CodegenError::UnsupportedTarget(m.to_string()))?;
    isa_builder
        .finish(settings::Flags::new(flags))
        .map_err(|e| CodegenError::UnsupportedTarget(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cranelift_codegen::ir::{types, InstBuilder};

    #[test]
    fn host_features_match_std_detection() {
        let jit = Jit::host(&JitOptions::default()).expect("host is supported");
        let f = jit.features();
        #[cfg(target_arch = "x86_64")]
        {
            assert!(f.is_x86_64());
            assert_eq!(f.has_sse41, std::is_x86_feature_detected!("sse4.1"));
            assert_eq!(f.has_avx2, std::is_x86_feature_detected!("avx2"));
            assert_eq!(
                f.has_avx512vnni,
                std::is_x86_feature_detected!("avx512vnni")
            );
        }
        assert!(!f.triple.is_empty());
    }

    /// A JIT'd `fn(a: *const i32, b: *const i32, out: *mut i32)` storing `a[0] + b[0]`:
    /// the round trip CLIF → machine code → call, and the disassembly capture.
    /// Every kernel can be shared by the threads that run parts of it (checked by the
    /// compiler: this fails to build if one is not `Send + Sync`).
    #[test]
    fn kernels_are_send_and_sync() {
        fn shareable<T: Send + Sync>() {}
        shareable::<KernelCode>();
        shareable::<crate::QConvKernel>();
        shareable::<crate::QMatMulKernel>();
        shareable::<crate::QuantizeKernel>();
        shareable::<crate::DequantizeKernel>();
        shareable::<crate::MaxPoolKernel>();
        shareable::<crate::FConvKernel>();
        shareable::<crate::FConvTransposeKernel>();
        shareable::<crate::GemmKernel>();
        shareable::<crate::ActivationKernel>();
        shareable::<crate::BinaryKernel>();
        shareable::<crate::BatchNormKernel>();
        shareable::<crate::SoftmaxKernel>();
        shareable::<crate::PoolKernel>();
        shareable::<crate::ConcatKernel>();
        shareable::<crate::ResizeKernel>();
        shareable::<crate::LrnKernel>();
        shareable::<crate::MoveKernel>();
        shareable::<crate::SumKernel>();
        shareable::<crate::ReduceMeanKernel>();
        shareable::<crate::CastKernel>();
        shareable::<crate::DynamicQuantizeKernel>();
        shareable::<crate::MatMulIntegerKernel>();
    }

    #[test]
    fn compiles_and_calls_a_function() {
        let mut jit = Jit::host(&JitOptions {
            capture_disassembly: true,
            verify: Some(true),
        })
        .expect("host is supported");
        let ptr = jit.pointer_type();
        let func = jit.define_kernel(3, |b, p| {
            let flags = ir::MemFlagsData::trusted();
            let a = b.ins().load(types::I32, flags, p[0], 0);
            let c = b.ins().load(types::I32, flags, p[1], 0);
            let sum = b.ins().iadd(a, c);
            b.ins().store(flags, sum, p[2], 0);
        });
        assert_eq!(ptr, jit.pointer_type());
        type AddFn = unsafe extern "C" fn(*const i32, *const i32, *mut i32);
        // SAFETY: the function was built with three pointer parameters and no results.
        let f: AddFn = unsafe { jit.compile_as("add_i32", func) }.expect("valid function");
        let (a, c, mut out) = (40i32, 2i32, 0i32);
        // SAFETY: `f` reads one i32 from each of the first two pointers and writes one i32
        // to the third, all of which point to live, aligned i32s; `jit` is alive.
        unsafe { f(&a, &c, &mut out) };
        assert_eq!(out, 42);
        let listing = jit.disassembly("add_i32").expect("captured");
        assert!(listing.contains("add"), "{listing}");
    }
}
