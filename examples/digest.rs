//! Prints a digest of every operator's output bits on fixed pseudo-random
//! inputs, per available ISA. The numeric contract says these digests are the
//! same on every ISA and every machine: run it on two machines (or under
//! `qemu-aarch64`) and diff the outputs. CI does exactly that for x86_64 and
//! aarch64.
//!
//! `cargo run --release --example digest`

use simdnorm::{
    BatchNorm, BatchShape, Isa, LayerNorm, Layout, Moments, Momentum, RmsNorm, Rows, RowsMut,
    RunningStats, TrainStats,
};

/// FNV-1a over the bits of a slice of f32: cheap, stable, good enough to tell
/// two outputs apart.
fn fnv(values: &[f32]) -> u64 {
    values
        .iter()
        .flat_map(|v| v.to_bits().to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// A fixed xorshift stream mapped to a few value classes (normal-ish, large
/// offset, huge, tiny), so the digest covers the rescaled paths too.
fn inputs(rows: usize, cols: usize) -> Vec<f32> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    (0..rows * cols)
        .map(|i| match (i / cols) % 4 {
            0 => next(),
            1 => 1e4 + next(),
            2 => 1e30 * next(),
            _ => 1e-40 * next(),
        })
        .collect()
}

fn main() -> Result<(), simdnorm::Error> {
    let (rows, cols) = (16, 1000);
    let x = inputs(rows, cols);
    let weight: Vec<f32> = (0..cols).map(|j| 1.0 + j as f32 / cols as f32).collect();
    let bias: Vec<f32> = (0..cols).map(|j| j as f32 / cols as f32 - 0.5).collect();
    for isa in Isa::available() {
        let mut y = vec![0.0f32; rows * cols];
        let (mut mean, mut rstd) = (vec![0.0f32; rows], vec![0.0f32; rows]);
        LayerNorm::new()
            .weight(&weight)
            .bias(&bias)
            .isa(isa)
            .forward_train(
                Rows::new(&x, rows, cols)?,
                RowsMut::new(&mut y, rows, cols)?,
                &mut mean,
                &mut rstd,
            )?;
        let ln = fnv(&[y.as_slice(), &mean, &rstd].concat());
        RmsNorm::new().weight(&weight).isa(isa).forward_train(
            Rows::new(&x, rows, cols)?,
            RowsMut::new(&mut y, rows, cols)?,
            &mut rstd,
        )?;
        let rms = fnv(&[y.as_slice(), &rstd].concat());
        let m = Moments::of_with(&x[..cols], Some(isa))?;
        let moments = fnv(&[
            m.mean as f32,
            (m.mean - m.mean as f32 as f64) as f32,
            m.m2 as f32,
        ]);
        // The ISA name is left out so that lines from different machines diff cleanly.
        println!("layer_norm {ln:016x}\nrms_norm {rms:016x}\nmoments {moments:016x}");
        for layout in [Layout::Nchw, Layout::Nhwc] {
            // [4, 40, 100]: 40 channels of 400 values, the rows reused as data.
            let shape = BatchShape::new(layout, 4, 40, 100);
            let weight = &weight[..40];
            let bias = &bias[..40];
            let bn = BatchNorm::new().weight(weight).bias(bias).isa(isa);
            let (mut run_mean, mut run_var) = (vec![0.5f32; 40], vec![2.0f32; 40]);
            let (mut save_mean, mut save_rstd) = (vec![0.0f32; 40], vec![0.0f32; 40]);
            bn.forward_train(
                shape,
                &x[..16_000],
                &mut y[..16_000],
                TrainStats {
                    saved_mean: &mut save_mean,
                    saved_rstd: &mut save_rstd,
                    running: Some(RunningStats {
                        mean: &mut run_mean,
                        var: &mut run_var,
                        momentum: Momentum::PyTorch(0.1),
                    }),
                },
            )?;
            let train = fnv(&[&y[..16_000], &save_mean, &save_rstd, &run_mean, &run_var].concat());
            bn.forward_inference(shape, &x[..16_000], &mut y[..16_000], &run_mean, &run_var)?;
            let infer = fnv(&y[..16_000]);
            println!(
                "batch_norm_train_{layout:?} {train:016x}\nbatch_norm_infer_{layout:?} {infer:016x}"
            );
        }
    }
    Ok(())
}
