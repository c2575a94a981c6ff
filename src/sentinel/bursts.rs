//! The debounce stage: drift events folded into one burst per owner.
//!
//! The debounce stage: drift events folded per owner into one [`DriftBurst`] each, with the
//! window, max wait and mode the owner's `spec.sentinel` asks for.

use std::time::Duration;

use futures::Stream;
use prometheus_client::metrics::gauge::Gauge;

use super::{
    detect::{DriftEvent, TimingDefaults},
    trigger::DriftBurst,
};
use crate::{
    stream::{ControllerStreamExt, DebounceConfig, Debounced, OnInputEnd, Timing},
    watch::NamespacedName,
};

/// The debounce of the sentinel: `defaults` unless an owner sets its own, up to `max_jitter`
/// per owner, and open bursts flushed at once when the inputs end (at shutdown).
pub fn debounce_config(defaults: TimingDefaults, max_jitter: Duration) -> DebounceConfig {
    DebounceConfig {
        timing: Timing {
            window: defaults.window,
            max_wait: Some(defaults.max_wait),
            mode: defaults.mode,
        },
        max_jitter,
        on_input_end: OnInputEnd::Immediately,
    }
}

/// Folds `drifts` per owner into bursts; `open` counts the bursts opened (the gate counts
/// them closed). An owner from `acknowledged` whose leading trigger was handled with no drift
/// since has its next drift triggered at once ([`super::acknowledged`]).
pub fn bursts(
    drifts: impl Stream<Item = DriftEvent>,
    acknowledged: impl Stream<Item = NamespacedName>,
    config: DebounceConfig,
    open: Gauge,
) -> impl Stream<Item = Debounced<NamespacedName, DriftBurst>> {
    let debounced = drifts.debounce_keyed_with(
        config,
        |e: &DriftEvent| e.owner.clone(),
        |e: &DriftEvent| Some(e.timing),
        move |burst: Option<DriftBurst>, e: DriftEvent| match burst {
            Some(mut b) => {
                b.add(e.object, &e.managers);
                b
            }
            None => {
                open.inc();
                DriftBurst::new(e.object, &e.managers, e.received)
            }
        },
    );
    debounced.settle_on(acknowledged)
}
