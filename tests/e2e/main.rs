//! Integration tests against a real kube-apiserver, etcd and kube-controller-manager, built
//! from their upstream Go modules. One control plane serves the whole run (see `support`).

mod bad_objects;
mod bench;
mod dashboard;
mod demo;
mod deploy;
mod drift_policy;
mod end_to_end;
mod events;
mod faults;
mod finalizers;
mod flags;
mod forged_status;
mod hostile;
mod identity;
mod installs;
mod leader;
mod leadership_deletions;
mod liveness;
mod lock;
mod managed_fields_wipe;
mod operator;
mod operator_owned;
mod operator_relist;
mod ownership;
mod relocated_install;
mod sentinel;
mod sentinel_security;
mod smoke;
mod soak;
mod startup;
mod support;
mod testenv;
mod timestamps;
