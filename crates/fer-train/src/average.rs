//! An exponential moving average (EMA) of a model's weights, for evaluation and checkpoints.
//!
//! After each optimiser step every float tensor of the average — weights, biases and BatchNorm's
//! γ, β, running mean and running variance — moves towards the model's:
//! `avg ← d·avg + (1 − d)·θ`, the averaging of timm's `ModelEmaV2` and of PyTorch's
//! `AveragedModel` with `get_ema_multi_avg_fn`. The decay of update `t` (0-based) is
//! `min(decay, (1 + t) / (10 + t))`, TensorFlow's `ExponentialMovingAverage` with `num_updates`:
//! early updates follow the model closely, so the average of a short run or a fresh start is not
//! dominated by the initial weights. `t` is the run's global step, so a resumed run averages
//! exactly as an uninterrupted one. The warm-up's decay reaches the configured `d` only at
//! `t = (10·d − 1) / (1 − d)`: 890 steps for 0.99, 1,790 for 0.995, 8,990 for 0.999 (40 epochs of
//! FER2013's Training at batch 128); until then the average spans about the last tenth of the
//! steps so far, whatever `d` is, so in shorter runs two decays above that point give the same
//! average.

use std::any::Any;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;

/// The decay of the `update`-th (0-based) averaging step for a run configured with `decay`:
/// `min(decay, (1 + update) / (10 + update))`, which is `decay` from update
/// `(10·decay − 1) / (1 − decay)` on.
///
/// ```
/// assert_eq!(fer_train::ema_decay_at(0.999, 0), 0.1);
/// assert_eq!(fer_train::ema_decay_at(0.999, 90), 0.91);
/// assert_eq!(fer_train::ema_decay_at(0.999, 1_000_000), 0.999);
/// ```
pub fn ema_decay_at(decay: f64, update: u64) -> f64 {
    let warm = (1.0 + update as f64) / (10.0 + update as f64);
    decay.min(warm)
}

/// Moves every float tensor of `average` towards the same tensor of `current`:
/// `d·average + (1 − d)·current`, tensors matched by their order in the module (the two must be
/// the same architecture, e.g. `average` made from `current.valid()` or loaded from its
/// checkpoint). BatchNorm's running statistics are averaged like the weights. Read `current`'s
/// running statistics through [`burn::module::AutodiffModule::valid`] (which folds in a pending
/// update), not from the autodiff model itself.
///
/// Errors name the tensor whose shape differs or the count that differs.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::nn::LinearConfig;
/// use burn::prelude::*;
///
/// type B = NdArray;
/// let device = Default::default();
/// let a = LinearConfig::new(2, 1).init::<B>(&device);
/// let b = LinearConfig::new(2, 1).init::<B>(&device);
/// let (wa, wb): (Vec<f32>, Vec<f32>) = (
///     a.weight.val().into_data().to_vec().unwrap(),
///     b.weight.val().into_data().to_vec().unwrap(),
/// );
/// let avg = fer_train::ema_update(a, &b, 0.75).unwrap();
/// let w: Vec<f32> = avg.weight.val().into_data().to_vec().unwrap();
/// for i in 0..2 {
///     assert!((w[i] - (0.75 * wa[i] + 0.25 * wb[i])).abs() < 1e-6);
/// }
/// ```
pub fn ema_update<B: Backend, M: Module<B>>(average: M, current: &M, decay: f64) -> Result<M, String> {
    if !(0.0..=1.0).contains(&decay) {
        return Err(format!("EMA decay {decay} is not in [0, 1]"));
    }
    let mut collect = Collect::<B> { tensors: Vec::new(), _backend: std::marker::PhantomData };
    current.visit(&mut collect);
    let count = collect.tensors.len();
    let mut mix =
        Mix::<B> { tensors: collect.tensors.into_iter(), decay, index: 0, error: None, _backend: Default::default() };
    let average = average.map(&mut mix);
    if let Some(error) = mix.error {
        return Err(error);
    }
    if mix.index != count {
        return Err(format!("the average has {} float tensors, the model {count}", mix.index));
    }
    Ok(average)
}

/// The float tensors of a module in visiting order, each boxed as its `Tensor<B, D>`.
struct Collect<B: Backend> {
    tensors: Vec<Box<dyn Any>>,
    _backend: std::marker::PhantomData<B>,
}

impl<B: Backend> ModuleVisitor<B> for Collect<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.tensors.push(Box::new(param.val()));
    }
}

/// Mixes each float tensor of the average with the collected tensor of the same position.
struct Mix<B: Backend> {
    tensors: std::vec::IntoIter<Box<dyn Any>>,
    decay: f64,
    index: usize,
    error: Option<String>,
    _backend: std::marker::PhantomData<B>,
}

impl<B: Backend> ModuleMapper<B> for Mix<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let index = self.index;
        self.index += 1;
        if self.error.is_some() {
            return param;
        }
        let current = match self.tensors.next().map(|t| t.downcast::<Tensor<B, D>>()) {
            Some(Ok(t)) => *t,
            Some(Err(_)) => {
                self.error = Some(format!("float tensor {index}: the model's has another rank than {D}"));
                return param;
            }
            None => {
                self.error = Some(format!("the average has more float tensors than the model ({index})"));
                return param;
            }
        };
        let (id, average, mapper) = param.consume();
        if average.dims() != current.dims() {
            self.error = Some(format!(
                "float tensor {index}: shape {:?} in the average, {:?} in the model",
                average.dims(),
                current.dims()
            ));
            return Param::from_mapped_value(id, average, mapper);
        }
        let mixed = average.mul_scalar(self.decay) + current.mul_scalar(1.0 - self.decay);
        Param::from_mapped_value(id, mixed, mapper)
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::ndarray::NdArray;
    use burn::module::AutodiffModule;
    use burn::nn::{BatchNormConfig, LinearConfig};
    use fer_models::{ModelConfig, NormStatistics};

    use super::*;

    type B = NdArray;

    fn floats(m: &impl Module<B>) -> Vec<Vec<f32>> {
        let mut c = Collect::<B> { tensors: Vec::new(), _backend: Default::default() };
        m.visit(&mut c);
        c.tensors
            .into_iter()
            .map(|t| {
                // Ranks 1, 2 and 4 occur in these models.
                let t = match t.downcast::<Tensor<B, 1>>() {
                    Ok(t) => return t.into_data().to_vec().unwrap(),
                    Err(t) => t,
                };
                let t = match t.downcast::<Tensor<B, 2>>() {
                    Ok(t) => return t.into_data().to_vec().unwrap(),
                    Err(t) => t,
                };
                t.downcast::<Tensor<B, 4>>().expect("rank 1, 2 or 4").into_data().to_vec().unwrap()
            })
            .collect()
    }

    #[test]
    fn every_float_tensor_moves_by_the_decay_running_statistics_included() {
        let device = Default::default();
        let config = ModelConfig::from_name("vgg-small").expect("known");
        B::seed(&device, 1);
        let a = config.init::<B>(&device);
        B::seed(&device, 2);
        let b = config.init::<B>(&device);
        // Give `b`'s BatchNorm running statistics values of their own, so they are compared too.
        let b = {
            type Ad = burn::backend::Autodiff<B>;
            let b_ad: fer_models::Model<Ad> = fer_models::Model::from_inner(b);
            let x = Tensor::<Ad, 4>::random([4, 1, 44, 44], burn::tensor::Distribution::Default, &device);
            let _ = b_ad.forward_training(x, NormStatistics::BatchUpdate, None);
            b_ad.valid()
        };
        let (fa, fb) = (floats(&a), floats(&b));
        let avg = ema_update(a, &b, 0.9).unwrap();
        let fm = floats(&avg);
        assert_eq!(fm.len(), fa.len());
        let mut running_moved = false;
        for ((m, a), b) in fm.iter().zip(&fa).zip(&fb) {
            for ((m, a), b) in m.iter().zip(a).zip(b) {
                let want = 0.9 * a + 0.1 * b;
                assert!((m - want).abs() <= 1e-6 * (1.0 + want.abs()), "{m} vs {want}");
            }
            running_moved |= a != b && a.iter().all(|v| *v == 0.0);
        }
        assert!(running_moved, "a running mean (0 at initialisation) should differ between the models");
    }

    #[test]
    fn decay_one_keeps_the_average_and_zero_copies_the_model() {
        let device = Default::default();
        let a = BatchNormConfig::new(3).init::<B>(&device);
        let b = BatchNormConfig::new(3).init::<B>(&device);
        let b = burn::nn::BatchNorm { gamma: b.gamma.map(|g| g.mul_scalar(3.0)), ..b };
        let keep = ema_update(a.clone(), &b, 1.0).unwrap();
        assert_eq!(floats(&keep), floats(&a));
        let copy = ema_update(a, &b, 0.0).unwrap();
        assert_eq!(floats(&copy), floats(&b));
    }

    #[test]
    fn another_architecture_or_a_bad_decay_is_an_error() {
        let device = Default::default();
        let a = LinearConfig::new(2, 3).init::<B>(&device);
        let b = LinearConfig::new(3, 2).init::<B>(&device);
        let err = ema_update(a.clone(), &b, 0.5).expect_err("shapes differ");
        assert!(err.contains("shape [2, 3] in the average, [3, 2] in the model"), "{err}");
        let no_bias = LinearConfig::new(2, 3).with_bias(false).init::<B>(&device);
        let err = ema_update(a.clone(), &no_bias, 0.5).expect_err("counts differ");
        assert!(err.contains("more float tensors than the model"), "{err}");
        let err = ema_update(no_bias, &a, 0.5).expect_err("counts differ");
        assert!(err.contains("the average has 1 float tensors, the model 2"), "{err}");
        let err = ema_update(a.clone(), &a, 1.5).expect_err("decay");
        assert!(err.contains("EMA decay 1.5 is not in [0, 1]"), "{err}");
    }

    #[test]
    fn warm_up_decay_follows_tensorflow() {
        assert_eq!(ema_decay_at(0.999, 0), 0.1);
        assert_eq!(ema_decay_at(0.999, 10), 11.0 / 20.0);
        assert_eq!(ema_decay_at(0.5, 10), 0.5);
        assert_eq!(ema_decay_at(0.999, 8_991), 0.999);
        assert!(ema_decay_at(0.999, 8_989) < 0.999);
        // The step from which the configured decay holds, as the module's documentation says.
        for (d, from) in [(0.99, 890), (0.995, 1_790), (0.999, 8_990)] {
            assert!(ema_decay_at(d, from - 1) < d && ema_decay_at(d, from + 1) == d, "{d}");
        }
    }
}
