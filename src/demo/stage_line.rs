//! The live line of a demo round on a terminal: each stage the drift has reached, with the
//! time since the drift. Nothing is drawn when standard error is not a terminal (the printed
//! line per round says it all there).

use std::{io::IsTerminal, time::Duration};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A stage of one round, as the demo sees it from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// The outside change was written.
    Drifted,
    /// The sentinel's trigger is on the custom resource.
    Triggered,
    /// The operator acknowledged the trigger.
    Acknowledged,
}

impl Stage {
    fn label(self) -> &'static str {
        match self {
            Stage::Drifted => "drifted",
            Stage::Triggered => "triggered",
            Stage::Acknowledged => "acknowledged",
        }
    }
}

/// The live line of one round; cleared when dropped.
pub(crate) struct StageLine {
    bar: Option<ProgressBar>,
    heading: String,
    reached: Vec<String>,
}

impl StageLine {
    /// A line headed `heading` (the round and its object), drawn only on a terminal.
    pub(crate) fn start(heading: String) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        let line = Self {
            bar,
            heading,
            reached: Vec::new(),
        };
        line.draw();
        line
    }

    /// The round has reached `stage`, `after` the drift; a stage is shown once.
    pub(crate) fn reached(&mut self, stage: Stage, after: Duration) {
        let label = stage.label();
        if self.reached.iter().any(|r| r.starts_with(label)) {
            return;
        }
        self.reached
            .push(format!("{label} {:.2} s", after.as_secs_f64()));
        self.draw();
    }

    fn draw(&self) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{}  {}", self.heading, self.reached.join(" → ")));
        }
    }
}

impl Drop for StageLine {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
