//! BatchNorm running statistics kept per thread, for deterministic data-parallel steps.
//!
//! Burn's `RunningState` is shared by every clone and fork of a model. Each thread's update is
//! kept as a pending value, and when a thread updates again (or the state is read with
//! `value_sync`, or recorded) *all* pending values are averaged in, summed in a hash map's order.
//! Replicas of one data-parallel step run on their own threads, so with three or more the
//! average's rounding follows that order, and a replica that updates twice in one step (the clean
//! and the attacked pass of adversarial training) folds in whichever of the other replicas' updates
//! have arrived by then. Both change the statistics from run to run.
//!
//! [`collect_running_updates`] runs a closure with the updates of the current thread kept aside
//! instead: each update builds on the thread's own previous one (as on one device), the shared
//! state is not touched, and [`RunningUpdates::apply_mean`] then sets each statistic to the mean of
//! the replicas' values, summed in the replicas' order.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId, RunningState};
use burn::prelude::*;

/// The newest value of each running statistic updated on one thread, in the order first updated.
type Values = Vec<(ParamId, Box<dyn Any + Send>)>;

thread_local! {
    /// While [`collect_running_updates`] runs on this thread: the updates it keeps aside.
    static COLLECTED: RefCell<Option<Values>> = const { RefCell::new(None) };
}

/// The running-statistic updates one [`collect_running_updates`] call kept aside: for each
/// statistic the closure updated, its newest value.
pub struct RunningUpdates {
    values: Values,
}

impl std::fmt::Debug for RunningUpdates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RunningUpdates({} statistics)", self.values.len())
    }
}

/// Runs `f` with the BatchNorm running-statistic updates of fer-models' layers on this thread
/// kept aside instead of written to the model's shared `RunningState`s; gives `f`'s result and the
/// updates. Within `f` each update builds on this thread's previous one and reads of the
/// statistics see them, exactly as a one-device step sees its own updates. Apply them with
/// [`RunningUpdates::apply_mean`]. Calls may nest; the inner one keeps its own updates.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::nn::BatchNormConfig;
/// use burn::prelude::*;
/// use fer_models::{NormStatistics, RunningUpdates, batch_norm_training, collect_running_updates};
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let norm = BatchNormConfig::new(1).init::<B>(&device);
/// let x = Tensor::<B, 4>::from_floats([[[[1.0, 3.0]]]], &device);
/// let (_, updates) = collect_running_updates(|| batch_norm_training(&norm, x, NormStatistics::BatchUpdate));
/// // Kept aside: the layer's running mean is still 0 ...
/// assert_eq!(norm.running_mean.value().into_scalar(), 0.0);
/// // ... until applied: 0.9 · 0 + 0.1 · 2 (the batch mean).
/// RunningUpdates::apply_mean(vec![updates], &norm);
/// assert!((norm.running_mean.value().into_scalar() - 0.2).abs() < 1e-6);
/// ```
pub fn collect_running_updates<T>(f: impl FnOnce() -> T) -> (T, RunningUpdates) {
    /// Puts the enclosing collection back, also when `f` panics.
    struct Restore(Option<Values>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            COLLECTED.with_borrow_mut(|c| *c = outer);
        }
    }
    let outer = COLLECTED.with_borrow_mut(|c| c.replace(Vec::new()));
    let restore = Restore(outer);
    let out = f();
    let values = COLLECTED.with_borrow_mut(|c| c.take()).unwrap_or_default();
    drop(restore);
    (out, RunningUpdates { values })
}

impl RunningUpdates {
    /// How many running statistics were updated.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether no running statistic was updated.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Sets each running statistic of `model` that any of `updates` holds to the mean of their
    /// values, summed in the order of `updates` (so the result does not depend on thread timing),
    /// on the statistic's device. Statistics no update holds keep their value; values of another
    /// backend than `B` (or another rank) are left out. `model` may be any clone or fork of the
    /// model the updates were collected on: they share the statistics.
    pub fn apply_mean<B: Backend, M: Module<B>>(updates: Vec<RunningUpdates>, model: &M) {
        let mut by_id: HashMap<ParamId, Vec<Box<dyn Any + Send>>> = HashMap::new();
        for update in updates {
            for (id, value) in update.values {
                by_id.entry(id).or_default().push(value);
            }
        }
        if by_id.is_empty() {
            return;
        }
        // `RunningState::map` writes the mapped value into the state it shares with `model`.
        drop(model.clone().map(&mut MeanOf { by_id }));
    }
}

/// Replaces each float whose id it holds by the mean of its values.
struct MeanOf {
    by_id: HashMap<ParamId, Vec<Box<dyn Any + Send>>>,
}

impl<B: Backend> ModuleMapper<B> for MeanOf {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let Some(values) = self.by_id.remove(&param.id) else {
            return param;
        };
        let (id, current, mapper) = param.consume();
        let device = current.device();
        let mut sum: Option<Tensor<B, D>> = None;
        let mut count = 0usize;
        for value in values {
            if let Ok(value) = value.downcast::<Tensor<B, D>>() {
                let value = value.to_device(&device);
                sum = Some(match sum {
                    Some(sum) => sum + value,
                    None => value,
                });
                count += 1;
            }
        }
        let value = sum.map_or(current, |sum| sum.div_scalar(count as f64));
        Param::from_mapped_value(id, value, mapper)
    }
}

/// The id of a running statistic (Burn keeps it private; its visitor shows it).
fn running_id<B: Backend>(state: &RunningState<Tensor<B, 1>>) -> ParamId {
    struct Id(Option<ParamId>);
    impl<B: Backend> ModuleVisitor<B> for Id {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0 = Some(param.id);
        }
    }
    let mut id = Id(None);
    Module::<B>::visit(state, &mut id);
    id.0.expect("a RunningState visits its value as one float parameter")
}

/// The newest value of `state` this thread sees: the one kept aside by an enclosing
/// [`collect_running_updates`] if it updated `state`, else the shared value with this thread's
/// pending update folded in (`value_sync`).
pub(crate) fn running_value<B: Backend>(state: &RunningState<Tensor<B, 1>>) -> Tensor<B, 1> {
    let kept = COLLECTED.with_borrow(|c| {
        let values = c.as_ref()?;
        let id = running_id(state);
        values.iter().find(|(i, _)| *i == id).and_then(|(_, v)| v.downcast_ref::<Tensor<B, 1>>().cloned())
    });
    kept.unwrap_or_else(|| state.value_sync())
}

/// Moves `state` to `value`: kept aside by an enclosing [`collect_running_updates`], else Burn's
/// `RunningState::update`.
pub(crate) fn update_running<B: Backend>(state: &RunningState<Tensor<B, 1>>, value: Tensor<B, 1>) {
    let value = COLLECTED.with_borrow_mut(|c| {
        let Some(values) = c.as_mut() else {
            return Some(value);
        };
        let id = running_id(state);
        match values.iter_mut().find(|(i, _)| *i == id) {
            Some(slot) => slot.1 = Box::new(value),
            None => values.push((id, Box::new(value))),
        }
        None
    });
    if let Some(value) = value {
        state.update(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NormStatistics, batch_norm_training};
    use burn::backend::{Autodiff, NdArray};
    use burn::nn::{BatchNorm, BatchNormConfig};

    type TB = Autodiff<NdArray>;

    fn norm() -> BatchNorm<TB> {
        BatchNormConfig::new(2).init::<TB>(&Default::default())
    }

    fn faces(shift: f32) -> Tensor<TB, 4> {
        let v: Vec<f32> = (0..2 * 2 * 3 * 3).map(|i| ((i * 7) % 11) as f32 / 3.0 + shift).collect();
        Tensor::from_data(TensorData::new(v, [2, 2, 3, 3]), &Default::default())
    }

    fn mean_of(norm: &BatchNorm<TB>) -> Vec<f32> {
        norm.running_mean.value_sync().into_data().to_vec().unwrap()
    }

    #[test]
    fn collected_updates_build_on_each_other_and_apply_as_on_one_thread() {
        // One thread, Burn's RunningState: two updates in sequence.
        let plain = norm();
        batch_norm_training(&plain, faces(0.0), NormStatistics::BatchUpdate);
        batch_norm_training(&plain, faces(5.0), NormStatistics::BatchUpdate);

        let kept = norm();
        let before = mean_of(&kept);
        let (_, updates) = collect_running_updates(|| {
            batch_norm_training(&kept, faces(0.0), NormStatistics::BatchUpdate);
            // A read inside sees the first update.
            let inside: Vec<f32> = running_value(&kept.running_mean).into_data().to_vec().unwrap();
            assert_ne!(inside, before);
            batch_norm_training(&kept, faces(5.0), NormStatistics::BatchUpdate)
        });
        assert_eq!(updates.len(), 2, "mean and variance of one layer");
        assert_eq!(mean_of(&kept), before, "kept aside, not written");
        RunningUpdates::apply_mean(vec![updates], &kept.clone());
        assert_eq!(mean_of(&kept), mean_of(&plain));
        let var = |n: &BatchNorm<TB>| n.running_var.value_sync().into_data().to_vec::<f32>().unwrap();
        assert_eq!(var(&kept), var(&plain));
    }

    #[test]
    fn the_mean_is_summed_in_the_order_given() {
        let shared = norm();
        let collect = |shift: f32| {
            collect_running_updates(|| batch_norm_training(&shared, faces(shift), NormStatistics::BatchUpdate)).1
        };
        let (a, b, c) = (collect(0.0), collect(1e4), collect(-1e4));
        let value = |u: &RunningUpdates| -> Vec<f32> {
            u.values[0].1.downcast_ref::<Tensor<TB, 1>>().expect("a mean").clone().into_data().to_vec().unwrap()
        };
        let (va, vb, vc) = (value(&a), value(&b), value(&c));
        RunningUpdates::apply_mean(vec![a, b, c], &shared);
        let expected: Vec<f32> = (0..2).map(|i| (va[i] + vb[i] + vc[i]) / 3.0).collect();
        assert_eq!(mean_of(&shared), expected);
    }

    #[test]
    fn nested_collections_keep_their_own_updates_and_panics_restore_the_outer_one() {
        let layer = norm();
        let (inner, outer) = collect_running_updates(|| {
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                collect_running_updates::<()>(|| panic!("inside"))
            }));
            assert!(caught.is_err());
            collect_running_updates(|| batch_norm_training(&layer, faces(0.0), NormStatistics::BatchUpdate)).1
        });
        assert_eq!((inner.len(), outer.len()), (2, 0));
        // Outside any collection, updates go to Burn's RunningState again.
        let before = mean_of(&layer);
        batch_norm_training(&layer, faces(0.0), NormStatistics::BatchUpdate);
        assert_ne!(mean_of(&layer), before);
    }
}
