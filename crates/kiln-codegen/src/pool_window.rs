//! The pooling machinery shared by the int8 MaxPool (`maxpool.rs`) and the f32 pools
//! (`fpool.rs`): the interpreter's `PoolGeometry` checks and output extents (`ceil_mode`
//! included); the channel-last padded scratch both reduce over — `[D_e][H_e][W_e][C_p]`,
//! extents covering every window, `C_p` the channels rounded up to whole vectors, padding
//! the reduction's identity — with its per-output-pixel and per-tap byte offset tables; and
//! [`WindowKernel`], the JIT'd reduction itself: per output pixel and vector of channels, a
//! running value over the taps (a loop over the tap table), optionally divided by the
//! pixel's divisor, its valid lanes stored into their NCHW planes.

// AOT: `into_aot` of this kernel (crate::aot).
#[path = "aot/parts/pool_window.rs"]
mod aot_parts;

use crate::clif::{at, counted_loop, mem, mem_aligned, scaled};
use crate::jit::{Jit, JitOptions, KernelCode};
use crate::qconv::AlignedBytes;
use crate::spatial::{widen, SP};
use crate::CodegenError;
use cranelift_codegen::ir::{types, Function, InstBuilder, Type, Value};
use cranelift_frontend::FunctionBuilder;
use kiln_ir::window::pool_output_extents;
use kiln_ir::{PoolAttrs, TensorType};

/// A validated pool, spatial dims padded to [`SP`].
#[derive(Clone, Debug)]
pub(crate) struct PoolGeometry {
    pub batch: usize,
    pub channels: usize,
    pub input: [usize; SP],
    pub output: [usize; SP],
    pub kernel: [usize; SP],
    pub stride: [usize; SP],
    pub dilation: [usize; SP],
    pub pad_begin: [usize; SP],
    pub pad_end: [usize; SP],
    /// Scratch extents: the padded input, grown to the last `ceil_mode` window.
    pub extent: [usize; SP],
    pub x_shape: Vec<usize>,
    pub out_shape: Vec<usize>,
}

/// Where a batch item lives in the channel-last scratch and where each window reads it.
#[derive(Clone, Debug)]
pub(crate) struct ScratchLayout {
    /// Channels per pixel in the scratch: a whole number of vectors.
    pub channels_padded: usize,
    /// Elements of the scratch.
    pub len: usize,
    /// Byte offset in the scratch of each output pixel's first tap.
    pub pixel_offsets: Vec<u32>,
    /// Byte offset of each tap from the first.
    pub tap_offsets: Vec<u32>,
}

impl PoolGeometry {
    /// The interpreter's checks; `op` names the node kind in errors.
    pub(crate) fn new(
        op: &'static str,
        x: &[usize],
        attrs: &PoolAttrs,
    ) -> Result<PoolGeometry, CodegenError> {
        let out = pool_output_extents(x, attrs)
            .map_err(|reason| CodegenError::InvalidOp { op, reason })?;
        let nsp = out.len();
        // scratch extents: the padded input, grown to cover the last ceil_mode window
        let extent: Vec<usize> = (0..nsp)
            .map(|d| {
                let padded = x[2 + d] + attrs.pads[d] + attrs.pads[nsp + d];
                let span = attrs.dilations[d] * (attrs.kernel[d] - 1) + 1;
                padded.max((out[d] - 1) * attrs.strides[d] + span)
            })
            .collect();
        let mut out_shape = x[..2].to_vec();
        out_shape.extend_from_slice(&out);
        Ok(PoolGeometry {
            batch: x[0],
            channels: x[1],
            input: widen(&x[2..], 1),
            output: widen(&out, 1),
            kernel: widen(&attrs.kernel, 1),
            stride: widen(&attrs.strides, 1),
            dilation: widen(&attrs.dilations, 1),
            pad_begin: widen(&attrs.pads[..nsp], 0),
            pad_end: widen(&attrs.pads[nsp..], 0),
            extent: widen(&extent, 1),
            x_shape: x.to_vec(),
            out_shape,
        })
    }

    pub(crate) fn out_pixels(&self) -> usize {
        self.output.iter().product()
    }

    /// The scratch layout for vectors of `lanes` elements of `elem_bytes` bytes; fails
    /// (naming `op`) when the scratch outgrows the kernels' 32-bit offsets.
    pub(crate) fn layout(
        &self,
        op: &'static str,
        lanes: usize,
        elem_bytes: usize,
    ) -> Result<ScratchLayout, CodegenError> {
        let channels_padded = self.channels.next_multiple_of(lanes).max(lanes);
        let pixel = elem_bytes * channels_padded;
        let row = self.extent[2] * pixel;
        let plane = self.extent[1] * row;
        if self.extent[0] * plane > u32::MAX as usize {
            return Err(CodegenError::Unsupported {
                op,
                reason: "the scratch exceeds the kernel's 32-bit offsets".to_string(),
            });
        }
        let (s, dl) = (self.stride, self.dilation);
        let mut pixel_offsets = Vec::with_capacity(self.out_pixels());
        for od in 0..self.output[0] {
            for oh in 0..self.output[1] {
                for ow in 0..self.output[2] {
                    let off = od * s[0] * plane + oh * s[1] * row + ow * s[2] * pixel;
                    pixel_offsets.push(off as u32);
                }
            }
        }
        let mut tap_offsets = Vec::with_capacity(self.kernel.iter().product());
        for kd in 0..self.kernel[0] {
            for kh in 0..self.kernel[1] {
                for kw in 0..self.kernel[2] {
                    let off = kd * dl[0] * plane + kh * dl[1] * row + kw * dl[2] * pixel;
                    tap_offsets.push(off as u32);
                }
            }
        }
        Ok(ScratchLayout {
            channels_padded,
            len: self.extent.iter().product::<usize>() * channels_padded,
            pixel_offsets,
            tap_offsets,
        })
    }

    /// Spread one batch item (`[C][D][H][W]`) into the channel-last scratch, every other
    /// element `padding`. Row by row: a scratch row (`W_e · C_p` elements) stays in L1
    /// while every channel's input row is spread into it.
    pub(crate) fn fill_channel_last<T: Copy>(
        &self,
        x: &[T],
        scratch: &mut [T],
        channels_padded: usize,
        padding: T,
    ) {
        scratch.fill(padding);
        let [d_n, h_n, w_n] = self.input;
        let cp = channels_padded;
        let row_len = self.extent[2] * cp;
        for d in 0..d_n {
            for h in 0..h_n {
                let row = ((d + self.pad_begin[0]) * self.extent[1] + h + self.pad_begin[1])
                    * row_len
                    + self.pad_begin[2] * cp;
                let row = &mut scratch[row..row + w_n * cp];
                for c in 0..self.channels {
                    let src = ((c * d_n + d) * h_n + h) * w_n;
                    for (pixel, &v) in row.chunks_exact_mut(cp).zip(&x[src..src + w_n]) {
                        pixel[c] = v;
                    }
                }
            }
        }
    }
}

/// What a [`WindowKernel`] computes over each window, one vector of channels at a time.
pub(crate) struct Reduction<'a> {
    /// The vector type (`lanes` elements of `elem_bytes`, 16 bytes in all).
    pub vector: Type,
    pub lanes: usize,
    pub elem_bytes: usize,
    /// The value a window starts from (the reduction's identity, which is also the
    /// scratch's padding).
    pub init: &'a dyn Fn(&mut FunctionBuilder) -> Value,
    /// `(running value, tap) → running value`.
    pub combine: &'a dyn Fn(&mut FunctionBuilder, Value, Value) -> Value,
    /// Divide each window's result by its pixel's f32 divisor (an F32X4 `vector`).
    pub divide: bool,
}

/// `(tables, scratch, out)` for one batch item.
type WindowFn = unsafe extern "C" fn(*const u8, *const u8, *mut u8);

/// A compiled window reduction over the channel-last scratch.
pub(crate) struct WindowKernel {
    pub geo: PoolGeometry,
    pub layout: ScratchLayout,
    elem_bytes: usize,
    /// Pixel offsets (u32), tap offsets (u32), then the divisors (f32) when dividing.
    tables: AlignedBytes,
    function: WindowFn,
    /// Declared last: `function` points into it.
    pub code: KernelCode,
}

impl WindowKernel {
    /// Compile `reduction` over `geo` laid out as `layout`; `divisors` holds one value per
    /// output pixel when the reduction divides (empty otherwise).
    pub(crate) fn compile(
        name: String,
        geo: PoolGeometry,
        layout: ScratchLayout,
        reduction: &Reduction,
        divisors: &[f32],
        options: &JitOptions,
    ) -> Result<WindowKernel, CodegenError> {
        let mut blob = Vec::new();
        for &o in layout.pixel_offsets.iter().chain(&layout.tap_offsets) {
            blob.extend_from_slice(&o.to_le_bytes());
        }
        for &d in divisors {
            blob.extend_from_slice(&d.to_le_bytes());
        }
        let mut jit = Jit::host(options)?;
        let func = build_window_reduction(&jit, &geo, &layout, reduction);
        // SAFETY: the function was built with three pointer parameters and no results —
        // `WindowFn`; the kernel owns `jit`, so the code outlives every call.
        let function: WindowFn = unsafe { jit.compile_as(&name, func)? };
        Ok(WindowKernel {
            geo,
            layout,
            elem_bytes: reduction.elem_bytes,
            tables: AlignedBytes::from_bytes(&blob),
            function,
            code: KernelCode::new(jit, name),
        })
    }

    pub(crate) fn scratch_bytes(&self) -> usize {
        (self.layout.len * self.elem_bytes).max(16)
    }

    pub(crate) fn new_scratch(&self) -> AlignedBytes {
        AlignedBytes::zeroed(self.scratch_bytes())
    }

    /// Reduce `x` (the input shape) into `out` (the output shape), batch item by batch
    /// item; `padding` fills the scratch around the input. `T` is the element type the
    /// kernel was compiled for (`elem_bytes` wide).
    pub(crate) fn run_into<T: bytemuck::Pod>(
        &self,
        x: &[T],
        out: &mut [T],
        scratch: &mut AlignedBytes,
        padding: T,
    ) -> Result<(), CodegenError> {
        let geo = &self.geo;
        let x_len: usize = geo.x_shape.iter().product();
        let out_len: usize = geo.out_shape.iter().product();
        if std::mem::size_of::<T>() != self.elem_bytes
            || x.len() != x_len
            || out.len() != out_len
            || scratch.as_slice().len() != self.scratch_bytes()
        {
            return Err(CodegenError::BadBuffer {
                kernel: self.code.name().to_string(),
                what: format!(
                    "{} → {} elements of {} bytes, scratch {} bytes; expected {x_len} → \
                     {out_len} of {} bytes, scratch {}",
                    x.len(),
                    out.len(),
                    std::mem::size_of::<T>(),
                    scratch.as_slice().len(),
                    self.elem_bytes,
                    self.scratch_bytes()
                ),
            });
        }
        let (x_image, out_image) = (x_len / geo.batch.max(1), out_len / geo.batch.max(1));
        let scratch_elems = self.layout.len;
        for n in 0..geo.batch {
            let elems: &mut [T] = bytemuck::cast_slice_mut(
                &mut scratch.as_mut_slice()[..scratch_elems * self.elem_bytes],
            );
            geo.fill_channel_last(
                &x[n * x_image..(n + 1) * x_image],
                elems,
                self.layout.channels_padded,
                padding,
            );
            let out_n = &mut out[n * out_image..(n + 1) * out_image];
            // SAFETY: valid while `self.code` lives. The function reads the tables as
            // packed here, 16-byte loads of the (16-byte aligned) scratch at a pixel offset
            // + a tap offset + a multiple of 16 below `elem_bytes · channels_padded` — inside
            // the scratch by construction of the extents — and writes the `out_image`
            // elements of `out_n`. Lengths and the element size are checked above.
            unsafe {
                (self.function)(
                    self.tables.as_slice().as_ptr(),
                    scratch.as_slice().as_ptr(),
                    out_n.as_mut_ptr().cast::<u8>(),
                )
            };
        }
        Ok(())
    }
}

/// `fn(tables, scratch, out)`: per output pixel, per vector of channels, the reduction
/// over the taps (divided by the pixel's divisor when asked); the valid channels stored
/// into their NCHW planes.
fn build_window_reduction(
    jit: &Jit,
    geo: &PoolGeometry,
    layout: &ScratchLayout,
    red: &Reduction,
) -> Function {
    jit.define_kernel(3, |b, p| {
        let (tables, scratch, out) = (p[0], p[1], p[2]);
        let pixels = geo.out_pixels();
        let taps = layout.tap_offsets.len();
        let tap_table = 4 * pixels;
        let divisor_table = tap_table + 4 * taps;
        let acc = b.declare_var(red.vector);
        let blocks = layout.channels_padded / red.lanes;
        let ro = mem_aligned().with_readonly();
        counted_loop(b, pixels, |b, px| {
            let entry = scaled(b, tables, px, 4);
            let off = b.ins().uload32(ro, entry, 0);
            let base = b.ins().iadd(scratch, off);
            let pixel_out = scaled(b, out, px, red.elem_bytes);
            let divisor = red.divide.then(|| {
                let d = b.ins().load(types::F32, ro, entry, divisor_table as i32);
                b.ins().splat(types::F32X4, d)
            });
            for block in 0..blocks {
                let init = (red.init)(b);
                b.def_var(acc, init);
                counted_loop(b, taps, |b, t| {
                    let entry = scaled(b, tables, t, 4);
                    let tap = b.ins().uload32(ro, entry, tap_table as i32);
                    let addr = b.ins().iadd(base, tap);
                    let v = b.ins().load(red.vector, ro, addr, (block * 16) as i32);
                    let running = b.use_var(acc);
                    let next = (red.combine)(b, running, v);
                    b.def_var(acc, next);
                });
                let mut result = b.use_var(acc);
                if let Some(d) = divisor {
                    result = b.ins().fdiv(result, d);
                }
                for lane in 0..red.lanes {
                    let c = block * red.lanes + lane;
                    if c >= geo.channels {
                        break;
                    }
                    let v = b.ins().extractlane(result, lane as u8);
                    let (addr, off) = at(b, pixel_out, red.elem_bytes * c * pixels);
                    b.ins().store(mem(), v, addr, off);
                }
            }
        });
    })
}

/// GlobalMaxPool / GlobalAveragePool as a pool whose window is the input's spatial extent
/// (no pads, stride 1); `op` names the node kind in errors.
pub(crate) fn global_pool_attrs(
    op: &'static str,
    x_ty: &TensorType,
) -> Result<PoolAttrs, CodegenError> {
    if x_ty.shape.len() < 3 {
        return Err(CodegenError::InvalidOp {
            op,
            reason: format!("input {x_ty} has no spatial dims"),
        });
    }
    let spatial = x_ty.shape[2..].to_vec();
    Ok(PoolAttrs {
        strides: vec![1; spatial.len()],
        pads: vec![0; 2 * spatial.len()],
        dilations: vec![1; spatial.len()],
        kernel: spatial,
        ceil_mode: false,
        count_include_pad: false,
        storage_order: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(kernel: usize, stride: usize, pads: [usize; 2], ceil_mode: bool) -> PoolAttrs {
        PoolAttrs {
            kernel: vec![kernel],
            strides: vec![stride],
            pads: pads.to_vec(),
            dilations: vec![1],
            ceil_mode,
            count_include_pad: false,
            storage_order: 0,
        }
    }

    /// 1-D, input 5, kernel 2, stride 2: floor gives 2 windows, ceil 3 (the third starts at
    /// index 4, inside the input), and the scratch grows to 6 to hold its missing tap.
    #[test]
    fn ceil_mode_adds_a_window_and_grows_the_extent() {
        let floor =
            PoolGeometry::new("max_pool", &[1, 1, 5], &attrs(2, 2, [0, 0], false)).expect("valid");
        assert_eq!((floor.output[2], floor.extent[2]), (2, 5));
        let ceil =
            PoolGeometry::new("max_pool", &[1, 1, 5], &attrs(2, 2, [0, 0], true)).expect("valid");
        assert_eq!((ceil.output[2], ceil.extent[2]), (3, 6));
        // input 4, kernel 2, stride 2, one end pad: ceil's third window would start at 4,
        // past the input and its leading padding, so it is dropped
        let dropped =
            PoolGeometry::new("max_pool", &[1, 1, 4], &attrs(2, 2, [0, 1], true)).expect("valid");
        assert_eq!(dropped.output[2], 2);
    }

    /// Offsets of a 2-channel 1-D pool with one leading pad: 4 lanes of 4 bytes per pixel.
    #[test]
    fn layout_offsets_step_by_stride_and_tap() {
        let g = PoolGeometry::new("average_pool", &[1, 2, 4], &attrs(3, 2, [1, 0], false))
            .expect("valid");
        let layout = g.layout("average_pool", 4, 4).expect("small");
        assert_eq!(layout.channels_padded, 4);
        assert_eq!(layout.pixel_offsets, [0, 32]);
        assert_eq!(layout.tap_offsets, [0, 16, 32]);
        let x = [1, 2, 3, 4, 5, 6, 7, 8];
        let mut scratch = vec![0; layout.len];
        g.fill_channel_last(&x, &mut scratch, layout.channels_padded, -1);
        assert_eq!(
            scratch,
            [-1, -1, -1, -1, 1, 5, -1, -1, 2, 6, -1, -1, 3, 7, -1, -1, 4, 8, -1, -1]
        );
    }

    #[test]
    fn rejects_what_the_interpreter_rejects() {
        for (x, a) in [
            (vec![1, 1, 2], attrs(3, 1, [0, 0], false)),
            (vec![1, 1, 2, 2], attrs(1, 1, [0, 0], false)),
            (vec![1, 1, 4], attrs(2, 0, [0, 0], false)),
        ] {
            assert!(matches!(
                PoolGeometry::new("max_pool", &x, &a),
                Err(CodegenError::InvalidOp { op: "max_pool", .. })
            ));
        }
        assert!(global_pool_attrs(
            "global_max_pool",
            &TensorType::new(kiln_ir::DType::F32, vec![1, 2])
        )
        .is_err());
    }
}
