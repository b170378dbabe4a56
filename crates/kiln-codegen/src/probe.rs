//! Machine probes for reporting kernel efficiency (DESIGN §9): the core clock, measured as
//! a chain of dependent 1-cycle integer adds, and the peak int8 MAC rates of the 128-bit
//! sequences the QConv micro-kernel is built from (`pmaddwd` + `paddd`; `vpdpbusd` where
//! the host has VNNI), all JIT-compiled through the same Cranelift pipeline as the kernels.

use crate::clif::{
    counted_loop_dyn, define_function, define_function_returning, mem, pmaddwd_accumulate,
    vpdpbusd_accumulate, Accumulate,
};
use crate::jit::{Jit, JitOptions};
use crate::CodegenError;
use cranelift_codegen::ir::{types, AbiParam, Function, InstBuilder};
use std::time::Instant;

/// What the host sustains, measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MachineProbe {
    /// Core clock in Hz while running JIT code (turbo included).
    pub clock_hz: f64,
    /// int8 multiply-accumulates per second of a register-blocked `pmaddwd` loop
    /// (8 MACs per instruction) on one core.
    pub pmaddwd_macs_per_second: f64,
    /// The same for `vpdpbusd` (16 MACs per instruction); `None` without VNNI.
    pub vpdpbusd_macs_per_second: Option<f64>,
}

impl MachineProbe {
    /// MACs per core cycle of the `pmaddwd` loop.
    pub fn pmaddwd_macs_per_cycle(&self) -> f64 {
        self.pmaddwd_macs_per_second / self.clock_hz
    }

    /// MACs per core cycle of the `vpdpbusd` loop, where there is one.
    pub fn vpdpbusd_macs_per_cycle(&self) -> Option<f64> {
        self.vpdpbusd_macs_per_second.map(|r| r / self.clock_hz)
    }
}

/// Adds per iteration of the clock loop.
const CHAIN: usize = 16;
/// Independent accumulators of the peak loop: 2 loaded operands × 4 register operands.
const PEAK_ACCS: usize = 8;

/// Probe the host: each measurement is the best of `repeats` runs of about 0.3 ms (short
/// and the best, because preemption by other processes only ever slows a run down).
pub fn probe_host(repeats: usize) -> Result<MachineProbe, CodegenError> {
    let options = JitOptions {
        capture_disassembly: true,
        verify: None,
    };
    let mut jit = Jit::host(&options)?;
    let clock = jit.compile("probe_add_chain", add_chain(&jit))?;
    let peak = jit.compile("probe_pmaddwd_peak", pmaddwd_peak(&jit))?;
    let vnni_peak = if jit.features().has_xmm_vnni() {
        Some(jit.compile("probe_vpdpbusd_peak", vpdpbusd_peak(&jit))?)
    } else {
        None
    };
    type PeakFn = unsafe extern "C" fn(i64, *const u8, *mut u8);
    // SAFETY: the functions were compiled just above with exactly these C signatures
    // (`add_chain`: (i64, ptr) -> i64; `pmaddwd_peak`, `vpdpbusd_peak`: (i64, ptr, ptr)),
    // and `jit` outlives every call below.
    let (clock, peak, vnni_peak) = unsafe {
        (
            std::mem::transmute::<*const u8, unsafe extern "C" fn(i64, *const i64) -> i64>(clock),
            std::mem::transmute::<*const u8, PeakFn>(peak),
            vnni_peak.map(|code| std::mem::transmute::<*const u8, PeakFn>(code)),
        )
    };
    let one = 1i64;
    let clock_iters = 100_000i64;
    let add_seconds = best_of(repeats, || {
        // SAFETY: `clock` reads one i64 through its pointer argument, which points to `one`.
        let r = unsafe { clock(clock_iters, &one) };
        std::hint::black_box(r);
    });
    // 64 operand pairs of 32 bytes (i16 values small enough that nothing saturates)
    let operands: Vec<u8> = (0..64 * 32 + 64).map(|i| (i % 7) as u8).collect();
    let mut sink = vec![0u8; PEAK_ACCS * 16];
    let peak_iters = 200_000i64;
    let peak_seconds = best_of(repeats, || {
        // SAFETY: `peak` reads at most 64·32 + 64 bytes from its first pointer (`operands`
        // has that many) and writes PEAK_ACCS·16 bytes to the second (`sink`).
        unsafe { peak(peak_iters, operands.as_ptr(), sink.as_mut_ptr()) };
        std::hint::black_box(&sink);
    });
    let vnni_seconds = vnni_peak.map(|peak| {
        best_of(repeats, || {
            // SAFETY: as for `peak`: the same operand window and sink sizes.
            unsafe { peak(peak_iters, operands.as_ptr(), sink.as_mut_ptr()) };
            std::hint::black_box(&sink);
        })
    });
    Ok(MachineProbe {
        clock_hz: (clock_iters as f64 * CHAIN as f64) / add_seconds,
        pmaddwd_macs_per_second: (peak_iters as f64 * PEAK_ACCS as f64 * 8.0) / peak_seconds,
        vpdpbusd_macs_per_second: vnni_seconds
            .map(|s| (peak_iters as f64 * PEAK_ACCS as f64 * 16.0) / s),
    })
}

fn best_of(repeats: usize, mut run: impl FnMut()) -> f64 {
    run(); // warm-up
    (0..repeats.max(1))
        .map(|_| {
            let t = Instant::now();
            run();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// `fn(iters, y: *const i64) -> i64`: `CHAIN` dependent `x += y` per iteration. `y` comes
/// from memory so the chain cannot be folded into a multiply.
fn add_chain(jit: &Jit) -> Function {
    let mut sig = jit.pointer_signature(0);
    sig.params.push(AbiParam::new(types::I64));
    sig.params.push(AbiParam::new(jit.pointer_type()));
    sig.returns.push(AbiParam::new(types::I64));
    define_function_returning(sig, jit.target_config(), |b, p| {
        let (iters, y_ptr) = (p[0], p[1]);
        let y = b.ins().load(types::I64, mem(), y_ptr, 0);
        let x = b.declare_var(types::I64);
        let zero = b.ins().iconst(types::I64, 0);
        b.def_var(x, zero);
        counted_loop_dyn(b, iters, |b, _| {
            for _ in 0..CHAIN {
                let v = b.use_var(x);
                let v = b.ins().iadd(v, y);
                b.def_var(x, v);
            }
        });
        vec![b.use_var(x)]
    })
}

/// `fn(iters, operands, out)`: per iteration two I16X8 loads from a 2 KiB window (so the
/// `pmaddwd`s cannot be hoisted out of the loop) times four register operands into eight
/// accumulators — the micro-kernel's instruction mix without its broadcasts.
fn pmaddwd_peak(jit: &Jit) -> Function {
    peak_loop(jit, types::I16X8, pmaddwd_accumulate)
}

/// The same loop with `vpdpbusd` on I8X16 operands (one instruction per 16 MACs, the
/// accumulator updated in place).
fn vpdpbusd_peak(jit: &Jit) -> Function {
    peak_loop(jit, types::I8X16, vpdpbusd_accumulate)
}

fn peak_loop(jit: &Jit, vector: types::Type, accumulate: Accumulate) -> Function {
    let mut sig = jit.pointer_signature(0);
    sig.params.push(AbiParam::new(types::I64));
    sig.params.push(AbiParam::new(jit.pointer_type()));
    sig.params.push(AbiParam::new(jit.pointer_type()));
    define_function(sig, jit.target_config(), |b, p| {
        let (iters, src, out) = (p[0], p[1], p[2]);
        let regs: Vec<_> = (0..4)
            .map(|k| b.ins().load(vector, mem(), src, 2048 + 16 * k))
            .collect();
        let accs: Vec<_> = (0..PEAK_ACCS)
            .map(|_| b.declare_var(types::I32X4))
            .collect();
        let zero32 = b.ins().iconst(types::I32, 0);
        let zero = b.ins().splat(types::I32X4, zero32);
        for &acc in &accs {
            b.def_var(acc, zero);
        }
        counted_loop_dyn(b, iters, |b, i| {
            let window = b.ins().band_imm_u(i, 63);
            let off = b.ins().ishl_imm_u(window, 5);
            let at = b.ins().iadd(src, off);
            let loaded = [
                b.ins().load(vector, mem(), at, 0),
                b.ins().load(vector, mem(), at, 16),
            ];
            for (l, &lv) in loaded.iter().enumerate() {
                for (r, &rv) in regs.iter().enumerate() {
                    let acc = accs[4 * l + r];
                    let a = b.use_var(acc);
                    let a = accumulate(b, a, lv, rv);
                    b.def_var(acc, a);
                }
            }
        });
        for (k, &acc) in accs.iter().enumerate() {
            let v = b.use_var(acc);
            b.ins().store(mem(), v, out, (16 * k) as i32);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probe loops are what they claim: the peak loop's body is `pmaddwd`s, and both
    /// report plausible rates (a clock between 0.5 and 10 GHz, at least one MAC per cycle).
    #[test]
    fn probes_measure_their_instruction_sequences() {
        let probe = probe_host(20).expect("host is supported");
        assert!(
            (0.5e9..10e9).contains(&probe.clock_hz),
            "clock {} Hz",
            probe.clock_hz
        );
        assert!(probe.pmaddwd_macs_per_cycle() >= 1.0, "{probe:?}");
        let mut jit = Jit::host(&JitOptions {
            capture_disassembly: true,
            verify: Some(true),
        })
        .expect("host is supported");
        jit.compile("peak", pmaddwd_peak(&jit)).expect("compiles");
        jit.compile("chain", add_chain(&jit)).expect("compiles");
        if jit.features().has_xmm_vnni() {
            jit.compile("vnni", vpdpbusd_peak(&jit)).expect("compiles");
        }
        let peak = jit.disassembly("peak").expect("captured");
        let chain = jit.disassembly("chain").expect("captured");
        if jit.features().has_xmm_vnni() {
            let rate = probe.vpdpbusd_macs_per_cycle().expect("probed with VNNI");
            assert!(rate >= 1.0, "{probe:?}");
            let vnni = jit.disassembly("vnni").expect("captured");
            assert_eq!(vnni.matches("vpdpbusd").count(), PEAK_ACCS, "{vnni}");
        } else {
            assert_eq!(probe.vpdpbusd_macs_per_second, None);
        }
        if jit.features().is_x86_64() {
            assert_eq!(peak.matches("pmaddwd").count(), PEAK_ACCS, "{peak}");
            // the chain stays CHAIN dependent register adds (`add` or two-operand `lea`, both
            // one cycle), not folded into a multiply
            let adds = chain
                .lines()
                .filter(|l| {
                    l.trim_start().starts_with("leaq (") || l.trim_start().starts_with("addq %")
                })
                .count();
            assert_eq!(adds, CHAIN, "{chain}");
        }
    }
}
