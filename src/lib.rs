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
//!   two-lane priority queue and runner, retrying sink, latency recorder.
//! * [`testenv`]: a local control plane (etcd, kube-apiserver, kube-controller-manager built
//!   from upstream Go modules) for tests, the demo and benchmarks.
//! * [`demo`]: `kube-sentinel demo`, the whole system on a local control plane, drifted and
//!   reverted while it measures drift-to-revert.

pub mod cli;
pub mod contract;
pub mod demo;
pub mod leader;
pub mod manifests;
pub mod operator;
pub mod sentinel;
pub mod stream;
pub mod telemetry;
pub mod testenv;
pub mod watch;
