//! `keep_freed_memory`: afterwards a block above glibc's largest `mmap` threshold (32 MB) comes from
//! a heap, and freeing it leaves it there. (A test binary of its own: the setting is process-wide.)
//!
//! The block is 40 MB: a thread's arena (tests run on threads) holds blocks up to its heap size,
//! 64 MB; larger ones glibc still maps there whatever the setting (the main thread's heap takes any
//! size).

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn large_blocks_stay_in_the_heap_after_keep_freed_memory() {
    // Bytes in mmap'd blocks (`hblkhd`) and in the heaps of every arena (`arena`).
    let usage = || {
        // SAFETY: mallinfo2 only reads glibc's allocator statistics.
        let info = unsafe { libc::mallinfo2() };
        (info.hblkhd, info.arena)
    };
    const BLOCK: usize = 40 << 20;
    let touch = |block: &mut Vec<u8>| {
        block.iter_mut().step_by(4096).for_each(|b| *b = 1);
        std::hint::black_box(block.len())
    };

    // Before: glibc maps the block and unmaps it when freed.
    let (mapped, _) = usage();
    let mut block = vec![0u8; BLOCK];
    touch(&mut block);
    assert!(usage().0 >= mapped + BLOCK, "without the setting, a 40 MB block is mmap'd");
    drop(block);

    assert!(fer_models::keep_freed_memory());
    let (mapped, _) = usage();
    let mut block = vec![0u8; BLOCK];
    touch(&mut block);
    let (mapped_after, heap) = usage();
    assert!(mapped_after < mapped + BLOCK, "the block was mmap'd: {mapped_after} bytes mapped");
    assert!(heap >= BLOCK, "the heap holds the block: {heap} bytes");
    drop(block);
    assert!(usage().1 >= BLOCK, "freeing the block trimmed the heap: {} bytes left", usage().1);
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
#[test]
fn keep_freed_memory_does_nothing_here() {
    assert!(!fer_models::keep_freed_memory());
}
