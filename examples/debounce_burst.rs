//! Debounces a burst of change events per object and prints each emission.
//!
//! Three objects change in bursts; "hot" changes every 300 ms for 5 s, so its 1 s window
//! never goes quiet and the 2 s max-wait emits it anyway; "cold" changes once; "warm" twice.
//! Runs on a paused tokio clock, so it finishes at once while the printed times are those a
//! real clock would show.
//!
//! Run: `cargo run --example debounce_burst`.

use std::{pin::pin, time::Duration};

use futures::{StreamExt, stream};
use kube_sentinel::stream::{ControllerStreamExt, DebounceConfig};
use tokio::time::{Instant, sleep_until};

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    let start = Instant::now();
    let mut events: Vec<(u64, &str, u32)> =
        (0..17u32).map(|i| (u64::from(i) * 300, "hot", i)).collect();
    events.extend([(100, "cold", 1), (400, "warm", 1), (900, "warm", 2)]);
    events.sort_by_key(|(at_ms, _, _)| *at_ms);

    let changes = stream::iter(events).then(move |(at_ms, object, generation)| async move {
        sleep_until(start + Duration::from_millis(at_ms)).await;
        (object, generation)
    });
    let config = DebounceConfig::trailing(Duration::from_secs(1))
        .max_wait(Duration::from_secs(2))
        .jitter(Duration::from_millis(200));
    let mut debounced = pin!(changes.debounce_keyed(
        config,
        |(object, _)| *object,
        |_, (_, generation)| generation,
    ));
    while let Some(emission) = debounced.next().await {
        println!(
            "{:>6} ms  {:<5} latest generation {:>2}, {:>2} events, first seen at {:>4} ms",
            (Instant::now() - start).as_millis(),
            emission.key,
            emission.value,
            emission.absorbed,
            (emission.first_seen - start).as_millis(),
        );
    }
}
