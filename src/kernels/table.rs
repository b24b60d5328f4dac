//! The per-ISA tables. [`for_each_kernel!`] lists every kernel once; the
//! table macros stamp out, for each token, thin entry points that call the
//! generic kernel with that token. For the hand-vectorized ISAs the entry
//! point is a `#[target_feature]` function, so the generic code is compiled
//! with that ISA's features and inlined whole.
//!
//! Adding a kernel: a field in [`Kernels`], one line in `for_each_kernel!`.

use super::channels::{self, ChannelPlanesJob, ChunkJob, PatternJob, PlaneJob, PlaneStatsJob};
use super::{Kernels, RowJob, copy, rows};
use crate::Isa;
use crate::moments::Moments;

/// Calls `$table!` with the list of kernels: `name(args) -> ret => generic`.
macro_rules! for_each_kernel {
    ($table:ident!($($head:tt)*)) => {
        $table!($($head)*
            layer_norm(job: RowJob<'_>) => rows::layer_norm_rows;
            rms_norm(job: RowJob<'_>) => rows::rms_norm_rows;
            layer_norm_descending(job: RowJob<'_>) => rows::layer_norm_rows_descending;
            rms_norm_descending(job: RowJob<'_>) => rows::rms_norm_rows_descending;
            row_moments(x: &[f32]) -> Moments => rows::row_moments;
            stream_copy(src: &[f32], dst: &mut [f32]) => copy::stream_copy;
            stream_copy_interleaved(src: &[f32], dst: &mut [f32]) => copy::stream_copy_interleaved;
            bn_plane_moments(job: PlaneStatsJob<'_>) => channels::plane_moments;
            bn_chunk_moments(job: ChunkJob<'_>) => channels::chunk_moments;
            bn_apply_planes(job: PlaneJob<'_>) => channels::apply_planes;
            bn_apply_channel_planes(job: ChannelPlanesJob<'_, '_>) => channels::apply_channel_planes;
            bn_apply_pattern(job: PatternJob<'_>) => channels::apply_pattern;
        );
    };
}

/// A table for a token that needs `#[target_feature]`.
macro_rules! feature_table {
    ($module:ident, $token:path, $features:literal;
     $($name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? => $generic:path;)*) => {
        mod $module {
            use super::*;
            use $token as Token;
            $(
                fn $name($($arg: $ty),*) $(-> $ret)? {
                    #[target_feature(enable = $features)]
                    fn with_features($($arg: $ty),*) $(-> $ret)? {
                        // SAFETY: only reachable through `TABLE`, which
                        // `kernels_for` hands out only after `Token::detect()`
                        // succeeded on this CPU.
                        $generic(unsafe { Token::new_unchecked() }, $($arg),*)
                    }
                    // SAFETY: as above, the CPU has `$features`.
                    unsafe { with_features($($arg),*) }
                }
            )*
            pub(super) static TABLE: Kernels = Kernels { $($name),* };
        }
    };
}

/// The portable table: no features to enable.
macro_rules! portable_table {
    ($($name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? => $generic:path;)*) => {
        mod portable {
            use super::*;
            use crate::simd::portable::Portable;
            $(
                fn $name($($arg: $ty),*) $(-> $ret)? {
                    $generic(Portable, $($arg),*)
                }
            )*
            pub(super) static TABLE: Kernels = Kernels { $($name),* };
        }
    };
}

for_each_kernel!(portable_table!());
#[cfg(target_arch = "x86_64")]
for_each_kernel!(feature_table!(avx512, crate::simd::avx512::Avx512, "avx512f";));
#[cfg(target_arch = "x86_64")]
for_each_kernel!(feature_table!(avx2, crate::simd::avx2::Avx2Fma, "avx2,fma";));
#[cfg(target_arch = "aarch64")]
for_each_kernel!(feature_table!(neon, crate::simd::neon::Neon, "neon";));

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
