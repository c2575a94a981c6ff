//! A small controller of its own, without Kubernetes: change events are debounced per key,
//! then go through the two-lane queue to a reconcile function.
//!
//! * drift events come in bursts; `debounce_keyed` turns each burst on one object into one
//!   trigger (trailing window 30 ms, at most 100 ms late under continuous drift);
//! * an initial list of objects arrives on the normal lane (as a watcher's `InitApply`);
//! * drift triggers arrive on the fast lane: the reconcile reverts, then asks for a full
//!   reconcile on the normal lane, which runs after the revert, never beside it;
//! * one object fails its first full reconcile and is retried with backoff;
//! * a recorder measures how long each key waited in the queue, per lane.
//!
//! Run: `cargo run --example mini_controller`

use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc;
use kube_sentinel::stream::{
    Claim, ControllerStreamExt, DebounceConfig, Lane, LanesConfig, Next, TwoLaneQueue,
};
use kube_sentinel::telemetry::LatencyRecorder;
use tokio::time::{Instant, sleep};

#[derive(Debug)]
struct TransientError {
    reason: &'static str,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let start = Instant::now();
    let (drift_tx, drift_rx) = mpsc::unbounded::<(&'static str, u32)>();
    let (normal_tx, normal_rx) = mpsc::unbounded::<&'static str>();

    // The synthetic event source: an initial list, then drift on two objects, then a resync.
    let events = tokio::spawn(async move {
        for name in ["web-0", "web-1", "db-0", "cache-0", "queue-0"] {
            let _ = normal_tx.unbounded_send(name);
        }
        sleep(Duration::from_millis(10)).await;
        // Three edits of queue-0 in a burst: one trigger, after the window. The object is
        // still waiting on the normal lane then, so it is promoted.
        for edit in 1..=3 {
            let _ = drift_tx.unbounded_send(("queue-0", edit));
        }
        sleep(Duration::from_millis(80)).await;
        for edit in 1..=5 {
            let _ = drift_tx.unbounded_send(("web-1", edit));
            sleep(Duration::from_millis(5)).await;
        }
        sleep(Duration::from_millis(150)).await;
        for name in ["web-0", "db-0"] {
            let _ = normal_tx.unbounded_send(name);
        }
    });

    let queue_wait = [LatencyRecorder::new(), LatencyRecorder::new()];
    let waits = queue_wait.clone();
    let reconcile = move |claim: Claim<&'static str>| {
        let lane_wait = &waits[usize::from(claim.lane == Lane::Fast)];
        lane_wait.record_since(claim.enqueued_at);
        let ms = (Instant::now() - start).as_millis();
        let what = match claim.lane {
            Lane::Fast => "revert drift",
            Lane::Normal => "full reconcile",
        };
        println!(
            "{ms:>5} ms  {:<6} {:<8} {what} (attempt {})",
            claim.lane.as_str(),
            claim.key,
            claim.attempt
        );
        async move {
            sleep(Duration::from_millis(20)).await;
            match (claim.key, claim.lane, claim.attempt) {
                (_, Lane::Fast, _) => Ok(Next::Requeue(Lane::Normal)),
                ("db-0", Lane::Normal, 1) => Err(TransientError {
                    reason: "database not ready",
                }),
                _ => Ok::<_, TransientError>(Next::Done),
            }
        }
    };

    let config = LanesConfig {
        retry_backoff_base: Duration::from_millis(50),
        ..LanesConfig::default()
    };
    let triggers = drift_rx
        .debounce_keyed(
            DebounceConfig::trailing(Duration::from_millis(30))
                .max_wait(Duration::from_millis(100)),
            |(name, _edit)| *name,
            |_previous, (_name, edit)| edit,
        )
        .map(move |burst| {
            let ms = (Instant::now() - start).as_millis();
            println!(
                "{ms:>5} ms  trigger {:<8} {} edits in one burst, last edit #{}",
                burst.key, burst.absorbed, burst.value
            );
            burst.key
        });
    let mut results = triggers.run_two_lanes(normal_rx, TwoLaneQueue::new(config), 2, reconcile);
    while let Some((key, lane, result)) = results.next().await {
        let ms = (Instant::now() - start).as_millis();
        match result {
            Ok(next) => println!("{ms:>5} ms  {lane:<6} {key:<8} done: {next:?}"),
            Err(error) => println!(
                "{ms:>5} ms  {lane:<6} {key:<8} failed: {}, backing off",
                error.reason
            ),
        }
    }
    let _ = events.await;

    for (lane, recorder) in [(Lane::Normal, &queue_wait[0]), (Lane::Fast, &queue_wait[1])] {
        println!("queue wait, {lane} lane: {}", recorder.snapshot().summary());
    }
    println!("\nfast lane queue wait distribution (ms):");
    print!("{}", queue_wait[1].snapshot().percentile_distribution());
}
