//! The sentinel: watch → managedFields actor filter → keyed debounce → status-patch trigger.

pub mod actor;
pub mod owner;
pub mod trigger;
