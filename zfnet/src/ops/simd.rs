//! Runtime dispatch to AVX2 + FMA for the plain-Rust kernels (pooling, LRN, im2col).
//!
//! The crate is compiled for baseline x86-64 (SSE2) so the binary runs on any x86-64 CPU; gemm
//! picks its own kernels at run time. Our loops are written so that LLVM vectorises them, but
//! with SSE2 alone the selects of the pooling argmax become per-lane branches and LRN's square
//! roots run 4 wide. [`dispatch!`] defines a function that calls a kernel compiled for AVX2 +
//! FMA when the CPU has them (the kernel, marked `#[inline(always)]`, is inlined into a
//! `#[target_feature]` wrapper) and the baseline build otherwise. The arithmetic is the same
//! IEEE operations either way (Rust never contracts `a * b + c` into an FMA on its own), so
//! results do not depend on the path taken.

/// `dispatch!(fn name(a: A, b: B) -> R = kernel);` defines `name`, which runs `kernel(a, b)`
/// compiled for AVX2 + FMA where the CPU has them.
macro_rules! dispatch {
    ($vis:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? = $kernel:path) => {
        $vis fn $name($($a: $t),*) $(-> $r)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn wide($($a: $t),*) $(-> $r)? {
                    $kernel($($a),*)
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has every feature `wide` is compiled for (checked above).
                    return unsafe { wide($($a),*) };
                }
            }
            $kernel($($a),*)
        }
    };
}
pub(crate) use dispatch;
