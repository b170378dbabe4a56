//! Reproducible pseudo-random data for kiln-codegen's unit tests, examples and benchmarks
//! (one generator instead of a copy in each): the 64-bit LCG of Knuth's MMIX. Not part of
//! the compiler's API.

/// `state ← state · 6364136223846793005 + 1442695040888963407` (wrapping).
#[derive(Clone, Debug)]
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Lcg {
        Lcg(seed)
    }

    /// Advance once; the new state.
    pub fn step(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0
    }

    /// The next state's high 31 bits (`state >> 33`).
    pub fn next_u32(&mut self) -> u32 {
        (self.step() >> 33) as u32
    }

    /// The next state's top 24 bits as an f32 in `[0, 1)`.
    pub fn unit_f32(&mut self) -> f32 {
        (self.step() >> 40) as f32 / (1u64 << 24) as f32
    }
}
