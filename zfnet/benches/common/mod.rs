//! What the bench binaries share: the zfvis binary's allocator setup and a timer.

use std::time::Instant;

#[allow(dead_code)]
/// As `zfvis train` / `zfvis index` do (server/src/alloc.rs): keep freed pages for 10 s.
pub fn keep_freed_memory() {
    // SAFETY: option getter/setter of the linked mimalloc; 15 = mi_option_purge_delay, checked to
    // hold a plausible delay first.
    unsafe {
        if (0..=60_000).contains(&libmimalloc_sys::mi_option_get(15)) {
            libmimalloc_sys::mi_option_set(15, 10_000);
        }
    }
}

/// Median wall time in ms of `runs` calls, after one warm-up call.
#[allow(dead_code)]
pub fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}
