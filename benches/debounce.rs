//! Keyed debounce throughput (events/s) with 1, 1,000 and 100,000 distinct keys:
//! `ControllerStreamExt::debounce_keyed` side by side with the debounces a user would
//! otherwise write (see `common`). Each iteration feeds 200,000 ready events, lets the 1 s
//! window pass on a paused clock and drains every emission, so only CPU work is measured.
//!
//! Run: `cargo bench --bench debounce -- --warm-up-time 1 --measurement-time 3`.
//! Memory per pending key is measured by the `debounce_memory` bench.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

mod common;

use common::{Approach, EVENTS, paused_runtime, run};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn debounce_throughput(c: &mut Criterion) {
    let runtime = paused_runtime();
    for keys in [1, 1_000, 100_000] {
        let mut group = c.benchmark_group(format!("debounce/{keys}_keys"));
        group.throughput(Throughput::Elements(EVENTS));
        group.sample_size(10);
        for approach in Approach::ALL {
            // Every approach must emit each key exactly once, or the comparison is void.
            assert_eq!(
                runtime.block_on(run(approach, EVENTS, keys)),
                keys,
                "{}",
                approach.name()
            );
            group.bench_function(approach.name(), |b| {
                b.iter(|| runtime.block_on(run(approach, EVENTS, keys)));
            });
        }
        group.finish();
    }
}

criterion_group!(benches, debounce_throughput);
criterion_main!(benches);
