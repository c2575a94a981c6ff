//! The Kubernetes layer both programs share and neither owns.
//!
//! The Kubernetes layer both programs share and neither owns: which object, who changed it,
//! which custom resource owns it, and a metadata-only watch.
//!
//! ```text
//!  metadata::metadata_events   watcher of PartialObjectMeta<K>, as ObjectMeta events
//!      │
//!      ├─▶ actor::ActorFilter  managedFields: written by whom? drift or not
//!      ├─▶ owner::OwnerKind    controller ownerReference, else the instance label
//!      └─▶ relist::Relist      which known objects a relist missed (deleted meanwhile)
//!              │
//!              ▼
//!          NamespacedName      the owning custom resource (queue and debounce key)
//! ```
//!
//! The sentinel runs its StatefulSet, Service and ConfigMap watches through these; the
//! operator its Secret watch and its optional `--watch-owned` watches. Like kube-runtime's
//! `utils/predicate.rs`, nothing here knows either program.

pub mod actor;
pub mod api;
pub mod backoff;
pub mod cause;
pub mod errors;
pub mod field_path;
pub mod keys;
pub mod metadata;
pub mod owner;
pub mod relist;
pub mod selector;

pub use keys::{NamespacedName, ObjectKey};
pub use owner::OwnerKind;
