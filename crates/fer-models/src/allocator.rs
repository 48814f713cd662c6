//! The C allocator's settings for training and evaluating on the CPU.
//!
//! A training step on burn-flex allocates and frees tens of multi-megabyte tensors (activations,
//! gradients, im2col results). glibc serves each block above its `mmap` threshold (at most 32 MB)
//! with a fresh `mmap` and hands it back with `munmap`, and trims freed memory off the top of its
//! heaps: every such block is then page-faulted and zeroed again by the kernel on its next use, and
//! every `munmap` interrupts the process's other cores to flush their TLBs. Keeping freed memory in
//! the process removes both (docs/RESULTS.md, "Keeping freed memory").

/// Keeps freed memory in the process for reuse: glibc then serves every block from its heaps (no
/// `mmap` per block) and never trims them, so the process stays at its peak footprint until it
/// exits. Meant for a process that trains or evaluates models, called once at its start (the `fer`
/// binary, the examples and the benches do); it changes process-wide state, so a library never
/// calls it on its own.
///
/// Returns `true` when the settings were applied (Linux with glibc), `false` elsewhere, where it
/// does nothing.
///
/// ```
/// let kept = fer_models::keep_freed_memory();
/// assert_eq!(kept, cfg!(all(target_os = "linux", target_env = "gnu")));
/// ```
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets glibc's malloc parameters (under its own lock); both values are
        // in the ranges its manual gives (M_MMAP_MAX ≥ 0, M_TRIM_THRESHOLD ≥ 0).
        let (no_mmap, no_trim) =
            unsafe { (libc::mallopt(libc::M_MMAP_MAX, 0), libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX)) };
        no_mmap == 1 && no_trim == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
