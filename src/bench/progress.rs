//! How far a drift run is: a bar on a terminal, a plain line every ten seconds otherwise.

use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Plain lines this far apart when standard error is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(10);

/// The progress of one drift run.
pub(crate) struct Progress {
    label: String,
    /// `None` when standard error is not a terminal.
    bar: Option<ProgressBar>,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    /// Progress of a run called `label` that drifts for `duration`.
    pub(crate) fn start(label: String, duration: Duration) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(duration.as_secs().max(1)),
                ProgressDrawTarget::stderr(),
            );
            let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} s  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(label.clone());
            bar
        });
        let now = Instant::now();
        Self {
            label,
            bar,
            started: now,
            last_line: now,
        }
    }

    /// The counts so far.
    pub(crate) fn update(&mut self, injected: u64, reverted: u64, pending: usize) {
        let message = format!("{injected} drifts, {reverted} reverted, {pending} pending");
        match &self.bar {
            Some(bar) => {
                bar.set_position(self.started.elapsed().as_secs());
                bar.set_message(message);
            }
            None if self.last_line.elapsed() >= PLAIN_EVERY => {
                self.last_line = Instant::now();
                let elapsed = self.started.elapsed().as_secs();
                println!("{}: {elapsed} s, {message}", self.label);
            }
            None => {}
        }
    }

    /// Clears the bar.
    pub(crate) fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
