//! The allocator: mimalloc, told to keep freed memory for the batch jobs.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (the same in its v2 and v3).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// Its default is 10 ms in v2 and 1000 ms in v3: a plausible delay means index 15 is the option
/// we mean.
const PLAUSIBLE_DELAYS: std::ops::RangeInclusive<std::os::raw::c_long> = 0..=60_000;

/// For training and indexing: never hand freed pages back to the kernel. Every step frees and
/// reallocates the same few hundred MB of activations and gradients; re-faulting and zeroing them
/// took a quarter of a training step. The server keeps the default (memory goes back when idle).
pub fn keep_freed_memory() {
    // SAFETY: plain option getters/setters of the linked mimalloc; no pointers involved.
    unsafe {
        if PLAUSIBLE_DELAYS.contains(&libmimalloc_sys::mi_option_get(PURGE_DELAY)) {
            libmimalloc_sys::mi_option_set(PURGE_DELAY, -1);
        } else {
            tracing::debug!("mimalloc purge_delay option not where expected; left as it is");
        }
    }
}
