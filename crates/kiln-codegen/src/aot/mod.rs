//! Ahead-of-time compilation (DESIGN §6, docs/aot.md): the same specialized kernels as the
//! JIT, built for an explicit [`AotTarget`] (x86-64 or AArch64 with chosen CPU features) and
//! emitted with their packed constants into one relocatable object, behind a generated
//! C entry point ([`ObjectBuilder`]).
//!
//! Kernel generators are reused unchanged: while [`recording`] runs, `Jit::host` hands out
//! a *recording* `Jit` for the target, whose `compile` keeps the CLIF function instead of
//! compiling it; each kernel's `into_aot` (in `parts/`, child modules of the kernels so they
//! see their private layout) then takes the recorded functions, its packed constants and
//! the calls its `run_into` would make, as an [`AotKernel`].

pub(crate) mod fill;
mod kernel;
mod object;
pub(crate) mod parts;
mod target;

pub use kernel::{AotKernel, CallArg, KernelCall};
pub use object::{Location, ObjectBuilder, ObjectStats};
pub use target::AotTarget;

use cranelift_codegen::isa::OwnedTargetIsa;
use std::cell::RefCell;

thread_local! {
    /// The target of the AOT build running on this thread, if any (see [`recording`]).
    static RECORDING: RefCell<Option<OwnedTargetIsa>> = const { RefCell::new(None) };
}

/// The ISA a `Jit` created now should record for, inside [`recording`].
pub(crate) fn recording_isa() -> Option<OwnedTargetIsa> {
    RECORDING.with(|r| r.borrow().clone())
}

/// Run `build` (a kernel's `compile`) with every `Jit::host` on this thread recording
/// functions for `target` instead of compiling them for the host. A scoped thread-local,
/// so that the sixteen kernel constructors need no target parameter; restored on unwind.
pub(crate) fn recording<T>(target: &AotTarget, build: impl FnOnce() -> T) -> T {
    struct Restore(Option<OwnedTargetIsa>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            RECORDING.with(|r| *r.borrow_mut() = previous);
        }
    }
    let previous = RECORDING.with(|r| r.replace(Some(target.isa().clone())));
    let _restore = Restore(previous);
    build()
}
