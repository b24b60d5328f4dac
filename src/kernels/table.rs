//! The per-ISA tables. One macro stamps out, for each token, thin
//! `#[target_feature]` entry points that call the generic kernels, so the
//! generic code is compiled with that ISA's features and inlined whole.

use super::{Kernels, RowJob, rows};
use crate::Isa;
use crate::moments::Moments;

macro_rules! kernel_table {
    ($module:ident, $token:path, $features:literal) => {
        mod $module {
            use super::*;
            use $token as Token;

            // SAFETY (every `new_unchecked` below): these functions are only
            // reachable through `TABLE`, which `kernels_for` hands out only
            // after `Token::detect()` has succeeded on this CPU.
            #[target_feature(enable = $features)]
            fn layer_norm_tf(job: RowJob<'_>) {
                rows::layer_norm_rows(unsafe { Token::new_unchecked() }, job)
            }
            #[target_feature(enable = $features)]
            fn rms_norm_tf(job: RowJob<'_>) {
                rows::rms_norm_rows(unsafe { Token::new_unchecked() }, job)
            }
            #[target_feature(enable = $features)]
            fn row_moments_tf(x: &[f32]) -> Moments {
                rows::row_moments(unsafe { Token::new_unchecked() }, x)
            }

            // SAFETY (the calls below): the CPU has `$features`, as above.
            fn layer_norm(job: RowJob<'_>) {
                unsafe { layer_norm_tf(job) }
            }
            fn rms_norm(job: RowJob<'_>) {
                unsafe { rms_norm_tf(job) }
            }
            fn row_moments(x: &[f32]) -> Moments {
                unsafe { row_moments_tf(x) }
            }

            pub(super) static TABLE: Kernels = Kernels {
                layer_norm,
                rms_norm,
                row_moments,
            };
        }
    };
}

#[cfg(target_arch = "x86_64")]
kernel_table!(avx512, crate::simd::avx512::Avx512, "avx512f");
#[cfg(target_arch = "x86_64")]
kernel_table!(avx2, crate::simd::avx2::Avx2Fma, "avx2,fma");
#[cfg(target_arch = "aarch64")]
kernel_table!(neon, crate::simd::neon::Neon, "neon");

mod portable {
    use super::*;
    use crate::simd::portable::Portable;

    fn layer_norm(job: RowJob<'_>) {
        rows::layer_norm_rows(Portable, job)
    }
    fn rms_norm(job: RowJob<'_>) {
        rows::rms_norm_rows(Portable, job)
    }
    fn row_moments(x: &[f32]) -> Moments {
        rows::row_moments(Portable, x)
    }

    pub(super) static TABLE: Kernels = Kernels {
        layer_norm,
        rms_norm,
        row_moments,
    };
}

/// The table for `isa`, if this CPU and build target can run it.
pub(crate) fn kernels_for(isa: Isa) -> Option<&'static Kernels> {
    match isa {
        Isa::Portable => Some(&portable::TABLE),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => crate::simd::avx2::Avx2Fma::detect().map(|_| &avx2::TABLE),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => crate::simd::avx512::Avx512::detect().map(|_| &avx512::TABLE),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => crate::simd::neon::Neon::detect().map(|_| &neon::TABLE),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}
