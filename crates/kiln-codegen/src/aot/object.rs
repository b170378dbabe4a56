//! [`ObjectBuilder`]: a relocatable object holding every step's kernel functions (local
//! symbols), their packed constants and the model's constants (local read-only data), and
//! the two exported C entry points:
//!
//! ```c
//! size_t NAME_scratch_size(void);
//! int NAME_run(const void *const *inputs, void *const *outputs, void *scratch);
//! ```
//!
//! The scratch is `[arena][kernel working memory]`: the memory plan's intermediate values
//! at their planned offsets, then (64-byte aligned) the largest working memory of any
//! kernel — kernels run one after the other, single-threaded, so they share it.

use super::kernel::{AotKernel, CallArg};
use super::AotTarget;
use crate::CodegenError;
use cranelift_codegen::ir::{
    types, AbiParam, FuncRef, Function, GlobalValue, InstBuilder, Signature, StackSlotData,
    StackSlotKind, UserFuncName, Value,
};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{default_libcall_names, DataDescription, DataId, FuncId, Linkage, Module};
use cranelift_object::{ObjectModule, ObjectProduct};
use std::time::Instant;

/// Where a step's operand or result lives when the entry point runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// The scratch (arena part), at this byte offset.
    Arena(usize),
    /// `inputs[i]`.
    Input(usize),
    /// `outputs[k]`.
    Output(usize),
    /// Model constant `k` (from [`ObjectBuilder::add_constant`]).
    Const(usize),
}

/// One kernel call site of the entry point, resolved to symbols.
struct Step {
    /// The kernel's functions as declared in the module.
    functions: Vec<FuncId>,
    blobs: Vec<DataId>,
    calls: Vec<super::KernelCall>,
    reads: Vec<Location>,
    write: Location,
}

/// Sizes and times of an emitted object.
#[derive(Clone, Debug, Default)]
pub struct ObjectStats {
    pub functions: usize,
    pub code_bytes: usize,
    pub data_bytes: usize,
    pub scratch_bytes: usize,
    pub compile_seconds: f64,
}

/// Builds one object file: add constants and steps in schedule order, then
/// [`ObjectBuilder::finish`].
pub struct ObjectBuilder {
    module: ObjectModule,
    name: String,
    constants: Vec<DataId>,
    steps: Vec<Step>,
    kernel_scratch: usize,
    stats: ObjectStats,
}

fn cranelift_error(function: &str, e: impl std::fmt::Debug) -> CodegenError {
    CodegenError::Cranelift {
        function: function.to_string(),
        message: format!("{e:?}"),
    }
}

impl ObjectBuilder {
    /// `name` prefixes the two exported symbols; it must be a C identifier.
    pub fn new(target: &AotTarget, name: &str) -> Result<ObjectBuilder, CodegenError> {
        let is_identifier = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !is_identifier {
            return Err(CodegenError::InvalidOp {
                op: "aot",
                reason: format!(
                    "model name '{name}' is not a C identifier ([A-Za-z_][A-Za-z0-9_]*)"
                ),
            });
        }
        let builder = cranelift_object::ObjectBuilder::new(
            target.isa().clone(),
            format!("{name}.o"),
            default_libcall_names(),
        )
        .map_err(|e| cranelift_error(name, e))?;
        Ok(ObjectBuilder {
            module: ObjectModule::new(builder),
            name: name.to_string(),
            constants: Vec::new(),
            steps: Vec::new(),
            kernel_scratch: 0,
            stats: ObjectStats::default(),
        })
    }

    fn define_blob(&mut self, symbol: &str, bytes: &[u8]) -> Result<DataId, CodegenError> {
        let id = self
            .module
            .declare_data(symbol, Linkage::Local, false, false)
            .map_err(|e| cranelift_error(symbol, e))?;
        let mut data = DataDescription::new();
        // at least one byte: an empty blob still needs an address
        let mut contents = bytes.to_vec();
        if contents.is_empty() {
            contents.push(0);
        }
        self.stats.data_bytes += contents.len();
        data.define(contents.into_boxed_slice());
        data.set_align(64);
        self.module
            .define_data(id, &data)
            .map_err(|e| cranelift_error(symbol, e))?;
        Ok(id)
    }

    /// A model constant a kernel reads at run time (or a graph output that is constant).
    pub fn add_constant(&mut self, bytes: &[u8]) -> Result<usize, CodegenError> {
        let k = self.constants.len();
        let id = self.define_blob(&format!("{}_const{k}", self.name), bytes)?;
        self.constants.push(id);
        Ok(k)
    }

    /// Compile a kernel's functions into the object and schedule its calls, reading
    /// `reads` (the kernel's operand order) and writing `write`.
    pub fn add_step(
        &mut self,
        kernel: AotKernel,
        reads: Vec<Location>,
        write: Location,
    ) -> Result<(), CodegenError> {
        let index = self.steps.len();
        let started = Instant::now();
        let mut functions = Vec::with_capacity(kernel.functions.len());
        for (f, (name, mut func)) in kernel.functions.into_iter().enumerate() {
            let symbol = format!("{}_s{index}_{f}_{name}", self.name);
            let id = self
                .module
                .declare_function(&symbol, Linkage::Local, &func.signature)
                .map_err(|e| cranelift_error(&symbol, e))?;
            func.name = UserFuncName::user(0, id.as_u32());
            let mut ctx = Context::for_function(func);
            self.module
                .define_function(id, &mut ctx)
                .map_err(|e| cranelift_error(&symbol, e))?;
            self.stats.code_bytes += ctx
                .compiled_code()
                .map_or(0, |code| code.code_buffer().len());
            self.stats.functions += 1;
            functions.push(id);
        }
        let mut blobs = Vec::with_capacity(kernel.blobs.len());
        for (k, blob) in kernel.blobs.iter().enumerate() {
            blobs.push(self.define_blob(&format!("{}_s{index}_blob{k}", self.name), blob)?);
        }
        self.stats.compile_seconds += started.elapsed().as_secs_f64();
        self.kernel_scratch = self.kernel_scratch.max(kernel.scratch_bytes);
        self.steps.push(Step {
            functions,
            blobs,
            calls: kernel.calls,
            reads,
            write,
        });
        Ok(())
    }

    /// Emit the entry points over an arena of `arena_bytes` and return the object file.
    pub fn finish(mut self, arena_bytes: usize) -> Result<(Vec<u8>, ObjectStats), CodegenError> {
        let started = Instant::now();
        let kernel_base = arena_bytes.next_multiple_of(64);
        let scratch_bytes = kernel_base + self.kernel_scratch;
        self.stats.scratch_bytes = scratch_bytes;
        let frontend = self.module.target_config();
        let ptr = frontend.pointer_type();

        // size_t NAME_scratch_size(void)
        let mut sig = Signature::new(self.module.isa().default_call_conv());
        sig.returns.push(AbiParam::new(ptr));
        let symbol = format!("{}_scratch_size", self.name);
        let id = self
            .module
            .declare_function(&symbol, Linkage::Export, &sig)
            .map_err(|e| cranelift_error(&symbol, e))?;
        let mut func = Function::with_name_signature(UserFuncName::user(0, id.as_u32()), sig);
        let mut fctx = FunctionBuilderContext::new();
        {
            let mut b = FunctionBuilder::new(&mut func, &mut fctx);
            let block = b.create_block();
            b.switch_to_block(block);
            b.seal_block(block);
            let size = b.ins().iconst(ptr, scratch_bytes as i64);
            b.ins().return_(&[size]);
            b.finalize(frontend);
        }
        self.define(id, func, &symbol)?;

        // int NAME_run(const void *const *inputs, void *const *outputs, void *scratch)
        let mut sig = Signature::new(self.module.isa().default_call_conv());
        sig.params.extend([AbiParam::new(ptr); 3]);
        sig.returns.push(AbiParam::new(types::I32));
        let symbol = format!("{}_run", self.name);
        let run_id = self
            .module
            .declare_function(&symbol, Linkage::Export, &sig)
            .map_err(|e| cranelift_error(&symbol, e))?;
        let mut func = Function::with_name_signature(UserFuncName::user(0, run_id.as_u32()), sig);
        // every symbol the entry point refers to, declared in it once
        let constants: Vec<GlobalValue> = self
            .constants
            .iter()
            .map(|&id| self.module.declare_data_in_func(id, &mut func))
            .collect();
        let mut step_functions: Vec<Vec<FuncRef>> = Vec::new();
        let mut step_blobs: Vec<Vec<GlobalValue>> = Vec::new();
        for step in &self.steps {
            step_functions.push(
                step.functions
                    .iter()
                    .map(|&id| self.module.declare_func_in_func(id, &mut func))
                    .collect(),
            );
            step_blobs.push(
                step.blobs
                    .iter()
                    .map(|&id| self.module.declare_data_in_func(id, &mut func))
                    .collect(),
            );
        }
        {
            let mut b = FunctionBuilder::new(&mut func, &mut fctx);
            let block = b.create_block();
            b.append_block_params_for_function_params(block);
            b.switch_to_block(block);
            b.seal_block(block);
            let params = b.block_params(block).to_vec();
            let (inputs, outputs, scratch) = (params[0], params[1], params[2]);
            let pointer_bytes = ptr.bytes() as i32;
            let flags = crate::clif::mem();
            let location = |b: &mut FunctionBuilder, at: Location| -> Value {
                match at {
                    Location::Arena(offset) => b.ins().iadd_imm_u(scratch, offset as i64),
                    Location::Input(i) => {
                        b.ins().load(ptr, flags, inputs, i as i32 * pointer_bytes)
                    }
                    Location::Output(k) => {
                        b.ins().load(ptr, flags, outputs, k as i32 * pointer_bytes)
                    }
                    Location::Const(k) => b.ins().symbol_value(ptr, constants[k]),
                }
            };
            for (s, step) in self.steps.iter().enumerate() {
                let reads: Vec<Value> = step.reads.iter().map(|&r| location(&mut b, r)).collect();
                let write = location(&mut b, step.write);
                for call in &step.calls {
                    let mut args = Vec::with_capacity(call.args.len());
                    for arg in &call.args {
                        let value = match *arg {
                            CallArg::Blob(k) => b.ins().symbol_value(ptr, step_blobs[s][k]),
                            CallArg::Scratch(offset) => {
                                b.ins().iadd_imm_u(scratch, (kernel_base + offset) as i64)
                            }
                            CallArg::Read { operand, offset } => {
                                b.ins().iadd_imm_u(reads[operand], offset as i64)
                            }
                            CallArg::ReadPointers => {
                                let slot = b.create_sized_stack_slot(StackSlotData::new(
                                    StackSlotKind::ExplicitSlot,
                                    (reads.len().max(1) as u32) * pointer_bytes as u32,
                                    ptr.bytes().trailing_zeros() as u8,
                                ));
                                for (k, &r) in reads.iter().enumerate() {
                                    b.ins().stack_store(ptr, r, slot, k as i32 * pointer_bytes);
                                }
                                b.ins().stack_addr(ptr, slot, 0)
                            }
                            CallArg::Write { offset } => b.ins().iadd_imm_u(write, offset as i64),
                            CallArg::Int(v) => b.ins().iconst(ptr, v as i64),
                        };
                        args.push(value);
                    }
                    b.ins().call(step_functions[s][call.function], &args);
                }
            }
            let ok = b.ins().iconst(types::I32, 0);
            b.ins().return_(&[ok]);
            b.finalize(frontend);
        }
        self.define(run_id, func, &symbol)?;
        self.stats.compile_seconds += started.elapsed().as_secs_f64();
        let product: ObjectProduct = self.module.finish();
        let bytes = product.emit().map_err(|e| cranelift_error(&self.name, e))?;
        Ok((bytes, self.stats))
    }

    fn define(&mut self, id: FuncId, func: Function, symbol: &str) -> Result<(), CodegenError> {
        let mut ctx = Context::for_function(func);
        self.module
            .define_function(id, &mut ctx)
            .map_err(|e| cranelift_error(symbol, e))?;
        self.stats.code_bytes += ctx
            .compiled_code()
            .map_or(0, |code| code.code_buffer().len());
        self.stats.functions += 1;
        Ok(())
    }
}
