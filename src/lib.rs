//! # kube-sentinel
//!
//! Detects and reverts drift in Kubernetes infrastructure within seconds.
//!
//! Two programs share this crate:
//!
//! * the **sentinel**, a small read-only controller: watch → managedFields actor filter →
//!   keyed debounce window → status-patch trigger on the owning custom resource;
//! * the **operator**, which reconciles the custom resource on a two-lane priority work queue
//!   and serves a trigger on the fast lane before any normal reconcile.
//!
//! ```text
//!  outside actor ──patch──▶ kube-apiserver ──watch──▶ sentinel
//!                                 ▲                    │ actor filter (managedFields)
//!                                 │                    │ keyed debounce (2 s)
//!                                 │◀── status.sentinel.triggerID ──┘
//!                                 │
//!                                 └──watch──▶ operator ── fast lane: revert infra + certs,
//!                                                         ack lastHandledTriggerID,
//!                                                         then a full reconcile (normal lane)
//! ```
//!
//! Module map:
//! * [`stream`]: generic `futures::Stream` combinators, no Kubernetes types: keyed debounce,
//!   two-lane priority queue and runner, retrying sink.
//! * [`telemetry`]: readiness gates, latency histograms, the queue's Prometheus metrics and
//!   (with Kubernetes) the operations endpoints and logging.
//! * `watch`: the Kubernetes-aware pieces both programs share: the managedFields actor
//!   filter, owner resolution, metadata-only watches, one name for "which object".
//! * `sentinel` and `operator`: the two programs, each assembled in named stages
//!   (`inputs → detect → debounce → gate → sink`; feeder, worker, fast and full reconcile).
//! * `testenv`: a local control plane (etcd, kube-apiserver, kube-controller-manager built
//!   from upstream Go modules) for tests, the demo and benchmarks.
//! * `bench`: `kube-sentinel bench`, drift→revert under synthetic drift load, ours beside
//!   baselines without the sentinel or without the fast lane.
//! * `demo`: `kube-sentinel demo`, the whole system on a local control plane, drifted and
//!   reverted while it measures drift-to-revert.
//!
//! Everything that knows Kubernetes is behind the default feature `kubernetes`. Without it
//! (`kube-sentinel = { version = "0.1", default-features = false }`) the crate is `stream` and
//! the generic parts of `telemetry`, and builds without kube, k8s-openapi, axum or rcgen.

#[cfg(feature = "kubernetes")]
pub mod api_client;
#[cfg(feature = "kubernetes")]
pub mod bench;
#[cfg(feature = "kubernetes")]
pub mod cli;
#[cfg(feature = "kubernetes")]
pub mod contract;
#[cfg(feature = "kubernetes")]
pub mod demo;
#[cfg(feature = "kubernetes")]
pub mod events;
#[cfg(feature = "kubernetes")]
pub mod faults;
#[cfg(feature = "kubernetes")]
pub mod leader;
#[cfg(feature = "kubernetes")]
pub mod manifests;
#[cfg(feature = "kubernetes")]
pub mod operator;
#[cfg(all(test, feature = "kubernetes"))]
mod proptest_json;
#[cfg(feature = "kubernetes")]
pub mod sentinel;
pub mod stream;
pub mod telemetry;
#[cfg(feature = "kubernetes")]
pub mod testenv;
#[cfg(feature = "kubernetes")]
pub mod watch;
