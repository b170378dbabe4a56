//! MatMul (numpy semantics: batched, broadcast batch dims, 1-D operands promoted) and ONNX
//! Gemm (`alpha·op(A)·op(B) + beta·C`), both on the blocked GEMM.

use crate::elem::{make_tensor, view, Elem};
use crate::elementwise::activate_f32;
use crate::gemm::{gemm, GemmScalar, MatRef};
use crate::movement::{broadcast_shape, broadcast_strides, broadcast_to};
use kiln_ir::{GemmAttrs, Tensor, TensorData};

impl GemmScalar for i64 {
    #[inline(always)]
    fn mul_add(acc: i64, a: i64, b: i64) -> i64 {
        acc.wrapping_add(a.wrapping_mul(b))
    }
}

/// The batched-matmul plan of two shapes: batch shape, M, K, N and the output shape.
pub(crate) struct MatMulPlan {
    batch: Vec<usize>,
    a_batch_strides: Vec<isize>,
    b_batch_strides: Vec<isize>,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub out_shape: Vec<usize>,
}

impl MatMulPlan {
    pub fn new(a: &[usize], b: &[usize]) -> Result<MatMulPlan, String> {
        if a.is_empty() || b.is_empty() {
            return Err(format!("matmul of a scalar: {a:?} × {b:?}"));
        }
        // numpy: a 1-D left operand is a row vector, a 1-D right operand a column vector;
        // the promoted dimension is removed from the result.
        let a2: Vec<usize> = if a.len() == 1 {
            vec![1, a[0]]
        } else {
            a.to_vec()
        };
        let b2: Vec<usize> = if b.len() == 1 {
            vec![b[0], 1]
        } else {
            b.to_vec()
        };
        let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
        let (kb, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
        if k != kb {
            return Err(format!("matmul inner dimensions differ: {a:?} × {b:?}"));
        }
        let a_batch = &a2[..a2.len() - 2];
        let b_batch = &b2[..b2.len() - 2];
        let batch = broadcast_shape(a_batch, b_batch)?;
        let scale = |s: Vec<isize>, by: usize| s.into_iter().map(|v| v * by as isize).collect();
        let a_batch_strides = scale(broadcast_strides(a_batch, &batch), m * k);
        let b_batch_strides = scale(broadcast_strides(b_batch, &batch), k * n);
        let mut out_shape = batch.clone();
        if a.len() > 1 {
            out_shape.push(m);
        }
        if b.len() > 1 {
            out_shape.push(n);
        }
        Ok(MatMulPlan {
            batch,
            a_batch_strides,
            b_batch_strides,
            m,
            k,
            n,
            out_shape,
        })
    }

    /// Element offsets of the A and B matrices of every batch entry, in output order.
    pub fn batch_offsets(&self) -> Vec<(usize, usize)> {
        let count: usize = self.batch.iter().product();
        let mut out = Vec::with_capacity(count);
        let mut coord = vec![0usize; self.batch.len()];
        for _ in 0..count {
            let off = |strides: &[isize]| -> usize {
                coord
                    .iter()
                    .zip(strides)
                    .map(|(&c, &s)| c as isize * s)
                    .sum::<isize>() as usize
            };
            out.push((off(&self.a_batch_strides), off(&self.b_batch_strides)));
            for d in (0..coord.len()).rev() {
                coord[d] += 1;
                if coord[d] < self.batch[d] {
                    break;
                }
                coord[d] = 0;
            }
        }
        out
    }

    /// `A·B` for every batch entry.
    pub fn run<T: GemmScalar>(&self, a: &[T], b: &[T]) -> Vec<T> {
        let (m, k, n) = (self.m, self.k, self.n);
        let offsets = self.batch_offsets();
        let mut out = vec![T::default(); offsets.len() * m * n];
        for (i, &(oa, ob)) in offsets.iter().enumerate() {
            let a_mat = MatRef::row_major(&a[oa..oa + m * k], m, k);
            let b_mat = MatRef::row_major(&b[ob..ob + k * n], k, n);
            gemm(a_mat, b_mat, &mut out[i * m * n..(i + 1) * m * n], false);
        }
        out
    }
}

fn matmul_typed<T: GemmScalar + Elem>(a: &Tensor, b: &Tensor) -> Result<Tensor, String> {
    let plan = MatMulPlan::new(a.shape(), b.shape())?;
    let out = plan.run(view::<T>(a)?, view::<T>(b)?);
    make_tensor(plan.out_shape, out)
}

/// ONNX MatMul on f32, i32 or i64 (integers wrap on overflow).
pub(crate) fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor, String> {
    if a.dtype() != b.dtype() {
        return Err(format!(
            "operands of different dtypes: {} and {}",
            a.dtype(),
            b.dtype()
        ));
    }
    match a.data() {
        TensorData::F32(_) => matmul_typed::<f32>(a, b),
        TensorData::I32(_) => matmul_typed::<i32>(a, b),
        TensorData::I64(_) => matmul_typed::<i64>(a, b),
        _ => Err(format!("matmul of {} tensors", a.dtype())),
    }
}

/// ONNX Gemm on f32: `Y = alpha·op(A)·op(B) + beta·C` with C broadcast to `[M, N]`, then
/// the fused activation.
pub(crate) fn gemm_op(
    a: &Tensor,
    b: &Tensor,
    c: Option<&Tensor>,
    attrs: &GemmAttrs,
) -> Result<Tensor, String> {
    let (ash, bsh) = (a.shape(), b.shape());
    if ash.len() != 2 || bsh.len() != 2 {
        return Err(format!("gemm needs 2-D operands, got {ash:?} and {bsh:?}"));
    }
    let av = view::<f32>(a).map_err(|e| format!("A: {e}"))?;
    let bv = view::<f32>(b).map_err(|e| format!("B: {e}"))?;
    let mut am = MatRef::row_major(av, ash[0], ash[1]);
    let mut bm = MatRef::row_major(bv, bsh[0], bsh[1]);
    if attrs.trans_a {
        am = am.t();
    }
    if attrs.trans_b {
        bm = bm.t();
    }
    if am.cols != bm.rows {
        return Err(format!(
            "inner dimensions differ: A {ash:?} (trans_a={}) × B {bsh:?} (trans_b={})",
            attrs.trans_a, attrs.trans_b
        ));
    }
    let (m, n) = (am.rows, bm.cols);
    let mut y = vec![0f32; m * n];
    gemm(am, bm, &mut y, false);
    if attrs.alpha != 1.0 {
        y.iter_mut().for_each(|v| *v *= attrs.alpha);
    }
    if let Some(c) = c {
        let cv = view::<f32>(c).map_err(|e| format!("C: {e}"))?;
        // C broadcasts to [M, N] one way only
        if broadcast_shape(c.shape(), &[m, n])? != [m, n] {
            return Err(format!(
                "C {:?} does not broadcast to [{m}, {n}]",
                c.shape()
            ));
        }
        let cb = broadcast_to(cv, c.shape(), &[m, n]);
        let beta = attrs.beta;
        y.iter_mut().zip(&cb).for_each(|(v, &c)| *v += beta * c);
    }
    if let Some(act) = &attrs.act {
        activate_f32(act, &mut y);
    }
    make_tensor(vec![m, n], y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_f32(shape.to_vec(), v.to_vec()).unwrap()
    }

    #[test]
    fn matmul_2d_by_hand() {
        // [[1,2],[3,4]]·[[5,6],[7,8]] = [[19,22],[43,50]]
        let y = matmul(
            &f32s(&[2, 2], &[1., 2., 3., 4.]),
            &f32s(&[2, 2], &[5., 6., 7., 8.]),
        )
        .unwrap();
        assert_eq!(y.as_f32().unwrap(), &[19., 22., 43., 50.]);
    }

    #[test]
    fn matmul_promotes_vectors_and_broadcasts_batches() {
        let m = f32s(&[2, 2], &[1., 2., 3., 4.]);
        let v = f32s(&[2], &[1., 1.]);
        // v·M = column sums [4, 6]; M·v = row sums [3, 7]; v·v = 2 (a scalar)
        let y = matmul(&v, &m).unwrap();
        assert_eq!((y.shape(), y.as_f32().unwrap()), (&[2][..], &[4., 6.][..]));
        let y = matmul(&m, &v).unwrap();
        assert_eq!((y.shape(), y.as_f32().unwrap()), (&[2][..], &[3., 7.][..]));
        let y = matmul(&v, &v).unwrap();
        assert_eq!((y.shape(), y.as_f32().unwrap()), (&[][..], &[2.][..]));
        // batch [2,1] × batch [3]: A[i] = (i+1)·I, B[j] = (j+1)·I → C[i][j] = (i+1)(j+1)·I
        let eye = |s: f32| [s, 0., 0., s];
        let a: Vec<f32> = (1..=2).flat_map(|s| eye(s as f32)).collect();
        let b: Vec<f32> = (1..=3).flat_map(|s| eye(s as f32)).collect();
        let y = matmul(&f32s(&[2, 1, 2, 2], &a), &f32s(&[3, 2, 2], &b)).unwrap();
        assert_eq!(y.shape(), &[2, 3, 2, 2]);
        let want: Vec<f32> = (1..=2)
            .flat_map(|i| (1..=3).flat_map(move |j| eye((i * j) as f32)))
            .collect();
        assert_eq!(y.as_f32().unwrap(), &want[..]);
        assert!(matmul(&f32s(&[2, 3], &[0.; 6]), &f32s(&[2, 3], &[0.; 6])).is_err());
    }

    #[test]
    fn integer_matmul_wraps() {
        // 2^31 - 1 + 1 wraps to -2^31 in i32
        let a = Tensor::new(vec![1, 2], TensorData::I32(vec![i32::MAX, 1])).unwrap();
        let b = Tensor::new(vec![2, 1], TensorData::I32(vec![1, 1])).unwrap();
        assert_eq!(
            matmul(&a, &b).unwrap().data(),
            &TensorData::I32(vec![i32::MIN])
        );
    }

    #[test]
    fn gemm_with_transposes_alpha_beta_and_broadcast_c() {
        // A stored transposed: Aᵀ = [[1,3],[2,4]] → A = [[1,2],[3,4]]; B = I
        let at = f32s(&[2, 2], &[1., 3., 2., 4.]);
        let b = f32s(&[2, 2], &[1., 0., 0., 1.]);
        let c = f32s(&[2], &[10., 20.]);
        let attrs = GemmAttrs {
            alpha: 2.0,
            beta: 0.5,
            trans_a: true,
            trans_b: false,
            act: None,
        };
        // 2·A + 0.5·[10,20] per row = [[7,14],[11,18]]
        let y = gemm_op(&at, &b, Some(&c), &attrs).unwrap();
        assert_eq!(y.as_f32().unwrap(), &[7., 14., 11., 18.]);
        // trans_b on a [N=3, K=2] B: rows of B are columns of op(B)
        let a = f32s(&[1, 2], &[1., 2.]);
        let bt = f32s(&[3, 2], &[1., 0., 0., 1., 1., 1.]);
        let attrs = GemmAttrs {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: true,
            act: None,
        };
        let y = gemm_op(&a, &bt, None, &attrs).unwrap();
        assert_eq!(y.as_f32().unwrap(), &[1., 2., 3.]);
        let bad_c = f32s(&[3], &[0.; 3]);
        assert!(gemm_op(&at, &b, Some(&bad_c), &attrs).is_err());
    }
}
