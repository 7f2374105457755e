//! The runtime one seed runs in.
//!
//! Under `--cfg madsim`: a fresh madsim runtime seeded with the seed, so time, task
//! order and every draw are a function of the seed. Without it (a plain `cargo test`):
//! a current-thread tokio runtime with paused time, which advances the clock to the
//! next timer whenever every task waits; latency and timeouts then cost no real time
//! either, and the single thread keeps the task order repeatable in practice (only
//! madsim promises it).
//!
//! **Invariants**
//! - Each seed gets a runtime of its own; nothing outlives it.

use std::future::Future;

/// Runs `future` to completion in a fresh runtime for `seed`.
pub fn block_on_seed<F: Future>(seed: u64, future: F) -> F::Output {
    #[cfg(madsim)]
    {
        let runtime =
            madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
        runtime.block_on(future)
    }
    #[cfg(not(madsim))]
    {
        let _ = seed;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a current-thread runtime can always be built");
        runtime.block_on(future)
    }
}
