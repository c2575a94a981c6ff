//! Bytes per pending key of `ControllerStreamExt::debounce_keyed` and of the debounces a user
//! would otherwise write (see `common`), counted by a counting global allocator
//! (`stats_alloc`): live heap bytes after 100,000 (and 1,000) distinct keys have been fed and
//! are waiting for their window, divided by the number of keys. Keys and values are `u64`.
//!
//! Run: `cargo bench --bench debounce_memory`. A separate binary from the throughput bench,
//! so that allocation counting does not slow the timed runs.

mod common;

use std::{
    alloc::System,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use common::{Approach, paused_runtime};
use futures::{StreamExt, poll, stream};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Live bytes per key once `keys` distinct keys are pending.
fn bytes_per_pending_key(approach: Approach, keys: u64) -> f64 {
    let runtime = paused_runtime();
    runtime.block_on(async {
        let fed = Arc::new(AtomicU64::new(0));
        let counter = fed.clone();
        let input = stream::iter((0..keys).map(|key| (key, key)))
            .inspect(move |_| {
                counter.fetch_add(1, Ordering::Relaxed);
            })
            .chain(stream::pending())
            .boxed();
        let region = Region::new(GLOBAL);
        let mut debounced = approach.debounce(input);
        while fed.load(Ordering::Relaxed) < keys {
            assert!(
                poll!(debounced.next()).is_pending(),
                "emitted before the window"
            );
        }
        let change = region.change();
        let live = change.bytes_allocated as f64 - change.bytes_deallocated as f64;
        // Then every key must come out.
        let emitted = debounced
            .take(usize::try_from(keys).expect("fits"))
            .count()
            .await;
        assert_eq!(emitted as u64, keys, "{}", approach.name());
        live / keys as f64
    })
}

fn main() {
    println!("bytes per pending key (u64 keys and values; live heap bytes / keys)");
    println!(
        "{:<26} {:>12} {:>12}",
        "approach", "1,000 keys", "100,000 keys"
    );
    for approach in Approach::ALL {
        println!(
            "{:<26} {:>12.1} {:>12.1}",
            approach.name(),
            bytes_per_pending_key(approach, 1_000),
            bytes_per_pending_key(approach, 100_000)
        );
    }
}
