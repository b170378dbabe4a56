//! Taking kernels apart for an object file. Each kernel's `into_aot` lives in a file of this
//! directory that is a *child module of the kernel's own module* (declared there with
//! `#[path]`), so it reads the kernel's private layout without widening its visibility:
//! `qconv.rs` (QConv), `quantize.rs` (Quantize, Dequantize), `pool_window.rs` (the window
//! kernels under int8 MaxPool and the f32 pools), `maxpool.rs`, `fpool.rs`, `felem.rs`
//! (Softmax, activations, binary ops), `fconv.rs`, `fconv_transpose.rs`, `resize.rs`,
//! `concat.rs`. This file holds what is shared.

use super::fill::build_copy;
use super::kernel::{AotKernel, CallArg, KernelCall};
use super::AotTarget;
use cranelift_codegen::ir::{AbiParam, Signature};
use cranelift_codegen::isa::TargetIsa;

/// `extern "C" fn(p0, …)` of `pointer_args` pointers and no result, on `isa`.
pub(crate) fn pointer_signature(isa: &dyn TargetIsa, pointer_args: usize) -> Signature {
    let mut sig = Signature::new(isa.default_call_conv());
    let ptr = isa.pointer_type();
    sig.params
        .extend(std::iter::repeat_n(AbiParam::new(ptr), pointer_args));
    sig
}

/// A byte copy of `bytes` bytes from operand 0 to the output.
pub(crate) fn copy_kernel(bytes: usize, target: &AotTarget) -> AotKernel {
    let isa = &**target.isa();
    let func = build_copy(bytes, pointer_signature(isa, 2), isa.frontend_config());
    AotKernel {
        name: format!("copy_{bytes}"),
        functions: vec![("copy".to_string(), func)],
        blobs: Vec::new(),
        scratch_bytes: 0,
        calls: vec![KernelCall {
            function: 0,
            args: vec![
                CallArg::Read {
                    operand: 0,
                    offset: 0,
                },
                CallArg::Write { offset: 0 },
            ],
        }],
    }
}

/// One call of function 0 per batch item `n`: `f(x + n·x_image, between.., out +
/// n·out_image, after..)` (image sizes in bytes).
pub(crate) fn per_image_calls(
    batch: usize,
    x_image: usize,
    out_image: usize,
    between: &[CallArg],
    after: &[CallArg],
) -> Vec<KernelCall> {
    (0..batch)
        .map(|n| {
            let mut args = vec![CallArg::Read {
                operand: 0,
                offset: n * x_image,
            }];
            args.extend_from_slice(between);
            args.push(CallArg::Write {
                offset: n * out_image,
            });
            args.extend_from_slice(after);
            KernelCall { function: 0, args }
        })
        .collect()
}

/// The calls of a kernel with one function `f(x, out)` or `f(x, blob, out)` over the
/// whole tensor.
pub(crate) fn whole_tensor_call(with_blob: bool) -> Vec<KernelCall> {
    let mut args = vec![CallArg::Read {
        operand: 0,
        offset: 0,
    }];
    if with_blob {
        args.push(CallArg::Blob(0));
    }
    args.push(CallArg::Write { offset: 0 });
    vec![KernelCall { function: 0, args }]
}

/// The calls of a kernel that, per batch item `n`, first fills its scratch from the item
/// (`fill(x + n·x_image, scratch, fill_tail..)`: a widen or padded copy) and then runs `compute(n,
/// write)` — the calls reading that scratch, `write` the item's output (`out +
/// n·out_image`). Image sizes in bytes.
pub(crate) fn fill_then_compute(
    batch: usize,
    x_image: usize,
    out_image: usize,
    fill: usize,
    fill_tail: &[CallArg],
    compute: impl Fn(usize, CallArg) -> Vec<KernelCall>,
) -> Vec<KernelCall> {
    let mut calls = Vec::new();
    for n in 0..batch {
        let mut args = vec![
            CallArg::Read {
                operand: 0,
                offset: n * x_image,
            },
            CallArg::Scratch(0),
        ];
        args.extend_from_slice(fill_tail);
        calls.push(KernelCall {
            function: fill,
            args,
        });
        calls.extend(compute(
            n,
            CallArg::Write {
                offset: n * out_image,
            },
        ));
    }
    calls
}
