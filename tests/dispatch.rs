//! Runtime dispatch: which ISAs are available, names and parsing, forcing an
//! ISA this machine lacks, and the `SIMDNORM_ISA` override. The override is
//! read once per process, so each setting runs this test binary again as a
//! child process with the variable set, executing only
//! `child_checks_selected_isa` (ignored in normal runs).

mod common;

use common::*;
use simdnorm::{Error, Isa, LayerNorm, Moments, RmsNorm, Rows, RowsMut};
use std::process::{Command, Output};

/// What the child should find, `KIND:NAME`: `ok:<isa>`, `unknown:<value>` or
/// `unavailable:<isa>`.
const CHILD_ENV: &str = "SIMDNORM_TEST_CHILD_EXPECT";
const CHILD_TEST: &str = "child_checks_selected_isa";

#[test]
fn available_starts_with_portable_and_ends_with_best() {
    let all = Isa::available();
    assert_eq!(all.first(), Some(&Isa::Portable));
    assert_eq!(all.last(), Some(&Isa::best()));
    assert!(all.windows(2).all(|w| w[0] < w[1]), "{all:?} not in order");
    assert!(all.iter().all(|isa| isa.is_available()));
    for isa in Isa::ALL {
        assert_eq!(all.contains(&isa), isa.is_available(), "{isa}");
    }
    assert!(Isa::best().is_available());
    if std::env::var_os("SIMDNORM_ISA").is_none() {
        assert_eq!(Isa::selected(), Ok(Isa::best()));
    }
}

/// Availability agrees with the standard library's feature detection.
#[test]
fn availability_matches_cpu_features() {
    #[cfg(target_arch = "x86_64")]
    {
        assert_eq!(
            Isa::Avx2.is_available(),
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        );
        assert_eq!(
            Isa::Avx512.is_available(),
            std::arch::is_x86_feature_detected!("avx512f")
        );
        assert!(!Isa::Neon.is_available());
    }
    #[cfg(target_arch = "aarch64")]
    {
        assert_eq!(
            Isa::Neon.is_available(),
            std::arch::is_aarch64_feature_detected!("neon")
        );
        assert!(!Isa::Avx2.is_available());
        assert!(!Isa::Avx512.is_available());
    }
}

#[test]
fn names_parse_back() {
    for isa in Isa::ALL {
        assert_eq!(isa.name().parse::<Isa>(), Ok(isa));
        assert_eq!(isa.to_string(), isa.name());
        assert_eq!(isa.name().to_uppercase().parse::<Isa>(), Ok(isa));
        assert_eq!(format!("  {}\n", isa.name()).parse::<Isa>(), Ok(isa));
    }
    let names: Vec<&str> = Isa::ALL.iter().map(|i| i.name()).collect();
    assert_eq!(names, ["portable", "avx2", "avx512", "neon"]);
}

#[test]
fn unknown_names_are_errors() {
    for bad in [
        "", " ", "bogus", "sse2", "avx-512", "avx512f", "avx 2", "neon2", "arm",
    ] {
        let e = bad.parse::<Isa>().unwrap_err();
        assert_eq!(
            e,
            Error::UnknownIsa {
                value: bad.to_string()
            }
        );
        let msg = e.to_string();
        assert!(msg.contains(&format!("{bad:?}")), "{msg}");
        assert!(msg.contains("portable"), "{msg}");
    }
}

/// Asking for an ISA this machine lacks is an error, never a silent fallback.
#[test]
fn forcing_an_unavailable_isa_is_an_error() {
    let missing: Vec<Isa> = Isa::ALL.into_iter().filter(|i| !i.is_available()).collect();
    // Neon on x86_64, the x86 ISAs on aarch64: there is always one.
    assert!(!missing.is_empty());
    let x = [1.0f32, 2.0, 3.0, 4.0];
    for isa in missing {
        let want = Err(Error::IsaUnavailable { isa: isa.name() });
        let mut y = [sentinel(); 4];
        let r = LayerNorm::new().isa(isa).forward(
            Rows::new(&x, 2, 2).unwrap(),
            RowsMut::new(&mut y, 2, 2).unwrap(),
        );
        assert_eq!(r, want);
        let r = RmsNorm::new()
            .isa(isa)
            .forward_in_place(RowsMut::new(&mut y, 2, 2).unwrap());
        assert_eq!(r, want);
        assert_eq!(bits(&y), bits(&[sentinel(); 4]), "{isa}: output written");
        assert_eq!(
            Moments::of_with(&x, Some(isa)),
            want.map(|()| Moments::new())
        );
        let msg = Error::IsaUnavailable { isa: isa.name() }.to_string();
        assert!(msg.contains(isa.name()), "{msg}");
    }
}

// ---------------------------------------------------------------------------
// SIMDNORM_ISA, through child processes

/// Runs this test binary's `child_checks_selected_isa` with `SIMDNORM_ISA`
/// set to `value` (removed if `None`), expecting `expect`.
fn run_child(value: Option<&str>, expect: &str) {
    let exe = std::env::current_exe().expect("test binary path");
    let args = [
        "--ignored",
        "--exact",
        CHILD_TEST,
        "--nocapture",
        "--test-threads=1",
    ];
    let configure = |cmd: &mut Command| {
        cmd.env(CHILD_ENV, expect);
        match value {
            Some(v) => cmd.env("SIMDNORM_ISA", v),
            None => cmd.env_remove("SIMDNORM_ISA"),
        };
    };
    let mut cmd = Command::new(&exe);
    cmd.args(args);
    configure(&mut cmd);
    let direct = cmd.output();
    // Under qemu-user without binfmt_misc the kernel cannot exec an aarch64
    // binary (spawn fails, or the forked child exits 127): start it through
    // qemu, as cargo's runner does.
    let exec_failed = match &direct {
        Err(_) => true,
        Ok(out) => out.status.code() == Some(127) && out.stdout.is_empty(),
    };
    let out: Output = if cfg!(target_arch = "aarch64") && exec_failed {
        let mut cmd = Command::new("qemu-aarch64");
        cmd.args(["-L", "/usr/aarch64-linux-gnu"])
            .arg(&exe)
            .args(args);
        configure(&mut cmd);
        match cmd.output() {
            Ok(out) => out,
            Err(e) => {
                println!("skipped: cannot start the child process ({e})");
                return;
            }
        }
    } else {
        direct.unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()))
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child with SIMDNORM_ISA={value:?} expecting {expect} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}

#[test]
fn env_unknown_isa_makes_operators_fail() {
    run_child(Some("bogus"), "unknown:bogus");
    run_child(Some("avx-512"), "unknown:avx-512");
}

#[test]
fn env_unavailable_isa_makes_operators_fail() {
    let missing = if cfg!(target_arch = "aarch64") {
        "avx512"
    } else {
        "neon"
    };
    run_child(Some(missing), &format!("unavailable:{missing}"));
}

#[test]
fn env_selects_each_available_isa() {
    for isa in Isa::available() {
        run_child(Some(isa.name()), &format!("ok:{}", isa.name()));
    }
    // Any case and surrounding blanks.
    run_child(Some(" PORTABLE "), "ok:portable");
}

#[test]
fn env_unset_or_blank_selects_best() {
    let best = format!("ok:{}", Isa::best().name());
    run_child(None, &best);
    run_child(Some(""), &best);
    run_child(Some("  "), &best);
}

/// The child side: checks what `SIMDNORM_ISA` did in this process. Does
/// nothing when not started by [`run_child`] (e.g. `cargo test -- --ignored`).
#[test]
#[ignore = "run in a child process by the env_* tests"]
fn child_checks_selected_isa() {
    let Ok(expect) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (kind, name) = expect.split_once(':').expect("KIND:NAME");
    let mut rng = Prng::new(30);
    let (rows, cols) = (3, 37);
    let x = Class::Normal.matrix(&mut rng, rows, cols);
    let mut y = vec![sentinel(); x.len()];
    let layer = LayerNorm::new().forward(
        Rows::new(&x, rows, cols).unwrap(),
        RowsMut::new(&mut y, rows, cols).unwrap(),
    );
    let rms = RmsNorm::new().forward_in_place(RowsMut::new(&mut y.clone(), rows, cols).unwrap());
    let moments = Moments::of(&x);
    let copy = simdnorm::stream_copy(&x, &mut y.clone());
    match kind {
        "ok" => {
            let isa: Isa = name.parse().unwrap();
            assert_eq!(Isa::selected(), Ok(isa));
            layer.unwrap();
            rms.unwrap();
            copy.unwrap();
            // The default path runs the selected ISA's kernels.
            let forced = Op::Layer.run(&Params::new(isa, 1e-5), &x, cols);
            assert_eq!(bits(&y), bits(&forced));
            let m = Moments::of_with(&x, Some(isa)).unwrap();
            assert_eq!(moments.unwrap(), m);
        }
        "unknown" | "unavailable" => {
            let want = if kind == "unknown" {
                Error::UnknownIsa {
                    value: name.to_string(),
                }
            } else {
                Error::IsaUnavailable {
                    isa: Isa::ALL
                        .into_iter()
                        .find(|i| i.name() == name)
                        .unwrap()
                        .name(),
                }
            };
            assert_eq!(Isa::selected(), Err(want.clone()));
            assert_eq!(layer, Err(want.clone()));
            assert_eq!(rms, Err(want.clone()));
            assert_eq!(moments, Err(want.clone()));
            assert_eq!(copy, Err(want));
            assert!(
                y.iter().all(|v| v.to_bits() == sentinel().to_bits()),
                "a failed call wrote its output"
            );
            // An explicit ISA still works: tests and benches can always force one.
            Op::Layer.run(&Params::new(Isa::Portable, 1e-5), &x, cols);
        }
        _ => panic!("bad {CHILD_ENV}: {expect}"),
    }
}
