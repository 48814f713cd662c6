//! Telling a generic `Tensor<B, D>` apart as one of a known backend, for the operations fer-models
//! replaces on some backends (burn-flex's kernels, the GPU backends' BatchNorm).

use std::any::Any;

/// Moves `value` into `U` when `T` and `U` are the same type.
pub(crate) fn same_type<T: 'static, U: 'static>(value: T) -> Result<U, T> {
    let mut slot = Some(value);
    if let Some(target) = (&mut slot as &mut dyn Any).downcast_mut::<Option<U>>() {
        return Ok(target.take().expect("the slot was just filled"));
    }
    Err(slot.expect("the slot is filled when the types differ"))
}

/// `value` as `U`, which the caller knows is its own type (the backend `B` matched already).
pub(crate) fn same_backend<T: 'static, U: 'static>(value: T) -> U {
    same_type(value).unwrap_or_else(|_| unreachable!("an operation's tensors share its backend"))
}
