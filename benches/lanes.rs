//! Cost per item (push + claim + complete) of the two-lane queue, beside kube-runtime's
//! one-lane `scheduler` as the baseline a controller would otherwise use.
//!
//! Run: `cargo bench --bench lanes -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::pin::Pin;

use criterion::{BenchmarkId, Criterion, Throughput};
use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use kube::runtime::scheduler::{ScheduleRequest, scheduler};
use kube_sentinel::stream::{Lane, LanesConfig, TwoLaneQueue};
use tokio::time::Instant;

const SIZES: [u64; 2] = [1_000, 100_000];

/// Every tenth key on the fast lane.
fn lane_of(key: u64) -> Lane {
    if key.is_multiple_of(10) {
        Lane::Fast
    } else {
        Lane::Normal
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

fn bench_lanes(c: &mut Criterion) {
    let mut group = c.benchmark_group("queue_push_claim_complete");
    group.sample_size(20);
    for n in SIZES {
        group.throughput(Throughput::Elements(n));

        // The queue driven directly, as the runner does.
        group.bench_with_input(BenchmarkId::new("two_lane/direct", n), &n, |b, &n| {
            let mut queue = TwoLaneQueue::new(LanesConfig::default());
            b.iter(|| {
                for key in 0..n {
                    queue.push(key, lane_of(key));
                }
                while let Some(claim) = queue.try_claim() {
                    queue.complete(black_box(&claim.key));
                }
            });
        });

        // Keys arriving through a channel, as from a watcher (same path as the baseline).
        group.bench_with_input(BenchmarkId::new("two_lane/channel", n), &n, |b, &n| {
            let rt = runtime();
            let mut queue = TwoLaneQueue::new(LanesConfig::default());
            let (tx, mut rx) = mpsc::unbounded::<u64>();
            b.iter(|| {
                for key in 0..n {
                    tx.unbounded_send(key).expect("open");
                }
                rt.block_on(async {
                    futures::future::poll_fn(|cx| {
                        while let std::task::Poll::Ready(Some(key)) =
                            Pin::new(&mut rx).poll_next(cx)
                        {
                            queue.push(key, lane_of(key));
                        }
                        while let std::task::Poll::Ready(claim) = queue.poll_claim(cx) {
                            queue.complete(black_box(&claim.key));
                        }
                        std::task::Poll::Ready(())
                    })
                    .await
                });
            });
        });

        // Baseline: kube-runtime's scheduler (one lane, DelayQueue + HashMap), requests due now.
        group.bench_with_input(
            BenchmarkId::new("kube_scheduler/channel", n),
            &n,
            |b, &n| {
                let rt = runtime();
                let (tx, rx) = mpsc::unbounded::<ScheduleRequest<u64>>();
                let mut sched = rt.block_on(async { Box::pin(scheduler(rx)) });
                let due = rt.block_on(async { Instant::now() });
                b.iter(|| {
                    for key in 0..n {
                        tx.unbounded_send(ScheduleRequest {
                            message: key,
                            run_at: due,
                        })
                        .expect("open");
                    }
                    rt.block_on(async {
                        for _ in 0..n {
                            black_box(sched.next().await);
                        }
                    });
                });
            },
        );
    }
    group.finish();
}

// `criterion_group!` generates an undocumented public fn, which `missing_docs = "deny"` rejects;
// this is what `criterion_group!` + `criterion_main!` expand to.
fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench_lanes(&mut criterion);
    criterion.final_summary();
}
