//! Data-parallel training steps on several devices of one machine.
//!
//! The algorithm is burn-train 0.21's multi-device strategy with the optimiser on the main device
//! (`MultiDeviceOptim::OptimMainDevice`), built from the same Burn pieces: the global batch is cut
//! into one shard per device; each device runs a replica (`fork` of the current weights) on its
//! own thread; each replica's gradients are moved to the main device
//! (`GradientsParams::to_device`) and summed there with Burn's `GradientsAccumulator`; one
//! optimiser step on the main device updates the single model, which the next step forks again.
//! fer-train keeps its own loop (honest selection, adversarial training, bit-identical resume: see
//! docs/ARCHITECTURE.md), so it calls these pieces instead of burn-train's `Learner`.
//!
//! Semantics:
//! * **Global batch = `batch_size`**, split over the devices (shard sizes differ by at most one).
//!   Each shard's mean loss is weighted by its share of the batch, so the summed gradient is the
//!   gradient of the global batch's mean loss: the learning rate needs no scaling.
//! * **BatchNorm** normalises each shard by its own statistics (as PyTorch DDP without SyncBN);
//!   the running statistics become the mean of the replicas' values, summed in shard order.
//! * **The main device** (the first) holds the model and the optimiser state, evaluates and writes
//!   every checkpoint; checkpoints do not depend on the device count, so a run resumes on any
//!   number of devices.
//! * **Seeds**: shard order and crops are the single-device run's; fer-train seeds each shard's
//!   dropout masks and attack starts by (seed, epoch, step, shard), independent of thread timing.
//! * **Before forking**, pending BatchNorm updates (Burn's `RunningState` keeps one per thread
//!   that updated, e.g. a training pass the caller ran on its own thread) are folded into the
//!   running statistics, so every replica starts from the current ones. Each replica's updates
//!   are then kept on its own thread (`fer_models::collect_running_updates`: a second update in
//!   the step, as adversarial training's attacked pass makes, builds on the replica's first, as
//!   on one device) and applied after the replicas finish (`RunningUpdates::apply_mean`). Burn's
//!   own `RunningState` would average the threads' updates in a hash map's order and let a
//!   replica's second update fold in whichever of the others' had arrived: with this, every step
//!   is bit-for-bit reproducible for any number of replicas and with adversarial training.

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use fer_models::{RunningUpdates, collect_running_updates};

/// What one data-parallel step produced, for the epoch's running figures.
#[derive(Debug)]
pub struct ParallelStep {
    /// Gradients of the global batch's mean loss, on the main device.
    pub grads: GradientsParams,
    /// The global batch's mean loss.
    pub loss: f32,
    /// Correct top-1 predictions in the global batch.
    pub hits: i64,
}

/// `(start, len)` of shard `index` when `n` items are cut into `parts` near-equal shards.
pub fn shard_range(n: usize, parts: usize, index: usize) -> (usize, usize) {
    let (base, extra) = (n / parts, n % parts);
    let start = index * base + index.min(extra);
    (start, base + usize::from(index < extra))
}

/// One data-parallel step: `images`/`targets` (on the main device, `devices[0]`) are split over
/// `devices`; `forward_loss(shard, replica, images, targets)` gives shard number `shard`'s mean
/// loss and logits (the shard number lets a loss draw its own random numbers, e.g. attack starts).
/// A non-finite shard loss makes [`ParallelStep::loss`] non-finite (check it before stepping the
/// optimiser). Fails when no device is given, a shard's `forward_loss` fails or a replica thread
/// panics.
pub fn data_parallel_step<B, M, F>(
    model: &M,
    devices: &[B::Device],
    images: Tensor<B, 4>,
    targets: Tensor<B, 1, Int>,
    forward_loss: &F,
) -> Result<ParallelStep, String>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Send,
    F: Fn(usize, &M, Tensor<B, 4>, Tensor<B, 1, Int>) -> Result<(Tensor<B, 1>, Tensor<B, 2>), String> + Sync,
{
    let main = devices.first().ok_or("no device given")?;
    let n = images.dims()[0];
    let parts = devices.len().min(n).max(1);
    // One shard's work: forward, loss weighted by the shard's share, backward, gradients moved to
    // the main device.
    let run_shard = |i: usize, replica: M, x: Tensor<B, 4>, y: Tensor<B, 1, Int>| {
        let len = x.dims()[0];
        // The replica's BatchNorm updates are kept on its thread, not written to the shared
        // running statistics (see below).
        let (out, running) = collect_running_updates(|| forward_loss(i, &replica, x, y.clone()));
        let (loss, logits) = out?;
        let value: f32 = loss.clone().into_scalar().elem();
        let hits = crate::train::correct_predictions(logits, y);
        let weighted = loss.mul_scalar(len as f64 / n as f64);
        let grads = GradientsParams::from_grads(weighted.backward(), &replica);
        let grads = if i == 0 { grads } else { grads.to_device(main, &replica) };
        Ok((grads, value * len as f32 / n as f32, hits, running))
    };
    let shard = |i: usize| {
        let (start, len) = shard_range(n, parts, i);
        let device = &devices[i];
        let x = images.clone().narrow(0, start, len).to_device(device);
        let y = targets.clone().narrow(0, start, len).to_device(device);
        let replica = if i == 0 { model.clone() } else { model.clone().fork(device) };
        (replica, x, y)
    };
    // Fold pending BatchNorm updates (the replicas leave none: theirs are collected; a training
    // pass the caller ran on this thread does) into the running statistics before the replicas
    // read them; without this the spawned threads, which see only their own pending updates, would
    // start from statistics one update old.
    drop(model.clone().into_record());
    let shards: Vec<Result<(GradientsParams, f32, i64, RunningUpdates), String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (1..parts)
            .map(|i| {
                let (replica, x, y) = shard(i);
                scope.spawn(move || run_shard(i, replica, x, y))
            })
            .collect();
        // Shard 0 runs on the calling thread, which has nothing else to do meanwhile.
        let (replica, x, y) = shard(0);
        let mut done = vec![run_shard(0, replica, x, y)];
        done.extend(
            workers.into_iter().map(|w| w.join().unwrap_or_else(|_| Err("a replica thread panicked".to_string()))),
        );
        done
    });
    let mut accumulator = GradientsAccumulator::<M>::new();
    let (mut loss, mut hits) = (0.0f32, 0i64);
    let mut running = Vec::with_capacity(parts);
    for shard in shards {
        let (grads, shard_loss, shard_hits, shard_running) = shard?;
        accumulator.accumulate(model, grads);
        loss += shard_loss;
        hits += shard_hits;
        running.push(shard_running);
    }
    // Each running statistic becomes the mean of the replicas' values, in shard order.
    RunningUpdates::apply_mean(running, model);
    Ok(ParallelStep { grads: accumulator.grads(), loss, hits })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::Distribution;

    type TB = Autodiff<NdArray>;

    #[test]
    fn shards_cover_the_batch_once() {
        for (n, parts) in [(16, 2), (7, 3), (5, 5), (128, 8), (3, 1)] {
            let mut next = 0;
            for i in 0..parts {
                let (start, len) = shard_range(n, parts, i);
                assert_eq!(start, next, "{n}/{parts}");
                assert!(len == n / parts || len == n / parts + 1);
                next = start + len;
            }
            assert_eq!(next, n);
        }
    }

    /// A model without BatchNorm or dropout: the split must not change the gradient at all.
    #[derive(Module, Debug)]
    struct Flat<B: Backend> {
        linear: Linear<B>,
    }

    #[test]
    fn sharded_gradients_equal_the_whole_batch_gradient() {
        let device = Default::default();
        let model = Flat { linear: LinearConfig::new(12, 7).init::<TB>(&device) };
        let loss_fn = CrossEntropyLossConfig::new().init::<TB>(&device);
        let forward = |_: usize, m: &Flat<TB>, x: Tensor<TB, 4>, y: Tensor<TB, 1, Int>| {
            let logits = m.linear.forward(x.flatten::<2>(1, 3));
            Ok((loss_fn.forward(logits.clone(), y), logits))
        };
        let images = Tensor::<TB, 4>::random([7, 1, 3, 4], Distribution::Uniform(0.0, 1.0), &device);
        let targets = Tensor::<TB, 1, Int>::from_data([0, 1, 2, 3, 4, 5, 6], &device);

        let (loss, _) = forward(0, &model, images.clone(), targets.clone()).expect("forward");
        let whole_loss: f32 = loss.clone().into_scalar().elem();
        let whole = GradientsParams::from_grads::<TB, _>(loss.backward(), &model);
        // Three "devices" (the same CPU three times: three threads), shards of 3, 2 and 2 faces.
        let devices = vec![device; 3];
        let step = data_parallel_step(&model, &devices, images, targets, &forward).expect("finite");
        assert!((step.loss - whole_loss).abs() < 1e-6, "{} vs {whole_loss}", step.loss);
        let id = model.linear.weight.id;
        let a: Tensor<NdArray, 2> = whole.get(id).expect("weight gradient");
        let b: Tensor<NdArray, 2> = step.grads.get(id).expect("weight gradient");
        let diff: f32 = (a - b).abs().max().into_scalar();
        assert!(diff < 1e-6, "max |Δgrad| {diff}");
    }

    #[test]
    fn a_non_finite_shard_makes_the_loss_non_finite() {
        let device = Default::default();
        let model = Flat { linear: LinearConfig::new(12, 7).init::<TB>(&device) };
        let forward = |_: usize, m: &Flat<TB>, x: Tensor<TB, 4>, _y: Tensor<TB, 1, Int>| {
            let logits = m.linear.forward(x.flatten::<2>(1, 3));
            Ok((logits.clone().sum().div_scalar(0.0), logits))
        };
        let images = Tensor::<TB, 4>::ones([4, 1, 3, 4], &device);
        let targets = Tensor::<TB, 1, Int>::zeros([4], &device);
        let step = data_parallel_step(&model, &[device; 2], images, targets, &forward).expect("ran");
        assert!(!step.loss.is_finite(), "{}", step.loss);
        assert!(
            data_parallel_step(&model, &[], Tensor::ones([1, 1, 3, 4], &device), Tensor::zeros([1], &device), &forward)
                .is_err()
        );
    }
}
