//! Runtime dispatch: which instruction set runs the kernels.
//!
//! The best available ISA is detected once per process. The environment
//! variable `SIMDNORM_ISA=portable|avx2|avx512|neon` overrides it; a value
//! that is unknown or not available on this CPU makes every operator return
//! an error instead of silently running something else. Tests and benches
//! force any available ISA in-process with the operators' `.isa(...)` option.

use crate::Error;
use crate::kernels::{Kernels, kernels_for};
use std::str::FromStr;
use std::sync::OnceLock;

/// An instruction set the kernels are compiled for.
///
/// ```
/// use simdnorm::Isa;
/// let all = Isa::available();
/// assert!(all.contains(&Isa::Portable));          // always there
/// assert_eq!(*all.last().unwrap(), Isa::best());  // fastest last
/// assert_eq!("avx2".parse::<Isa>(), Ok(Isa::Avx2));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isa {
    /// `wide`-based code on the build target's baseline SIMD (SSE2, NEON,
    /// simd128, or scalar): runs everywhere.
    Portable,
    /// x86_64 AVX2 with FMA.
    Avx2,
    /// x86_64 AVX-512F.
    Avx512,
    /// aarch64 Advanced SIMD.
    Neon,
}

impl Isa {
    /// Every ISA the crate knows, whether or not this machine has it.
    pub const ALL: [Isa; 4] = [Isa::Portable, Isa::Avx2, Isa::Avx512, Isa::Neon];

    /// The name used by `SIMDNORM_ISA` and the bench tool.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// Whether this CPU and build target can run this ISA.
    pub fn is_available(self) -> bool {
        kernels_for(self).is_some()
    }

    /// The ISAs this machine can run, `Portable` first and the fastest last.
    pub fn available() -> Vec<Isa> {
        Isa::ALL
            .into_iter()
            .filter(|isa| isa.is_available())
            .collect()
    }

    /// The fastest ISA this machine can run, ignoring `SIMDNORM_ISA`.
    pub fn best() -> Isa {
        Isa::ALL
            .into_iter()
            .rev()
            .find(|isa| isa.is_available())
            .unwrap_or(Isa::Portable)
    }

    /// The ISA the operators use by default: `SIMDNORM_ISA` if set, else
    /// [`Isa::best`]. Read once per process.
    pub fn selected() -> Result<Isa, Error> {
        static SELECTED: OnceLock<Result<Isa, Error>> = OnceLock::new();
        SELECTED
            .get_or_init(|| match std::env::var("SIMDNORM_ISA") {
                Ok(value) if !value.trim().is_empty() => {
                    let isa: Isa = value.parse()?;
                    if isa.is_available() {
                        Ok(isa)
                    } else {
                        Err(Error::IsaUnavailable { isa: isa.name() })
                    }
                }
                _ => Ok(Isa::best()),
            })
            .clone()
    }

    /// The kernel table of `isa`, or of the selected ISA when `None`.
    pub(crate) fn kernels(isa: Option<Isa>) -> Result<&'static Kernels, Error> {
        let isa = match isa {
            Some(isa) => isa,
            None => Isa::selected()?,
        };
        kernels_for(isa).ok_or(Error::IsaUnavailable { isa: isa.name() })
    }
}

impl FromStr for Isa {
    type Err = Error;

    /// Parses `portable`, `avx2`, `avx512` or `neon` (any case).
    fn from_str(s: &str) -> Result<Isa, Error> {
        let lower = s.trim().to_ascii_lowercase();
        Isa::ALL
            .into_iter()
            .find(|isa| isa.name() == lower)
            .ok_or(Error::UnknownIsa {
                value: s.to_string(),
            })
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
