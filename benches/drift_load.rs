//! `cargo bench --bench drift_load`: `kube-sentinel bench` on its short profile (ten
//! resources, one drift a second for 30 s, every variant), figures in `target/bench/`.
//!
//! The full profile is a documented command (BENCHMARKS.md), not this bench: it takes long.
//! Extra arguments after `--` go to `kube-sentinel bench` (`cargo bench --bench drift_load --
//! --resources 100 --rate 10`), later ones winning.

use std::process::{Command, ExitCode};

const SHORT_PROFILE: [&str; 6] = ["--resources", "10", "--rate", "1", "--duration", "30s"];

fn main() -> ExitCode {
    // cargo bench passes `--bench`; everything else is for `kube-sentinel bench`.
    let extra: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let status = Command::new(env!("CARGO_BIN_EXE_kube-sentinel"))
        .arg("bench")
        .args(SHORT_PROFILE)
        .args(&extra)
        .status();
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("kube-sentinel bench: {s}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("running kube-sentinel bench: {e}");
            ExitCode::FAILURE
        }
    }
}
