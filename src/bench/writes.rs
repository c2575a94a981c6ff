//! API writes each program made, from its own `rest_client_requests_total`.

use serde::Serialize;

use crate::demo::{
    programs::{ProgramKind, Programs},
    report::counter,
};

/// The methods that write.
const WRITES: [&str; 4] = ["POST", "PUT", "PATCH", "DELETE"];

/// Writes (`POST`, `PUT`, `PATCH`, `DELETE`) made by each program; `None` where it does not
/// run (or its metrics could not be read).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub(crate) struct ApiWrites {
    /// The sentinel's.
    pub sentinel: Option<f64>,
    /// The operator's.
    pub operator: Option<f64>,
}

impl ApiWrites {
    /// The counts so far.
    pub(crate) async fn read(programs: &Programs) -> Self {
        Self {
            sentinel: writes(programs.port(ProgramKind::Sentinel)).await,
            operator: writes(programs.port(ProgramKind::Operator)).await,
        }
    }

    /// What was written since `before`.
    pub(crate) fn since(self, before: Self) -> Self {
        let delta = |now: Option<f64>, then: Option<f64>| Some(now? - then?);
        Self {
            sentinel: delta(self.sentinel, before.sentinel),
            operator: delta(self.operator, before.operator),
        }
    }

    /// Writes per drift, of `drifts`.
    pub(crate) fn per(self, drifts: u64) -> Self {
        let per = |n: Option<f64>| n.filter(|_| drifts > 0).map(|n| n / drifts as f64);
        Self {
            sentinel: per(self.sentinel),
            operator: per(self.operator),
        }
    }
}

async fn writes(port: Option<u16>) -> Option<f64> {
    let port = port?;
    let mut total = 0.0;
    for method in WRITES {
        let label = format!("method=\"{method}\"");
        total += counter(port, "rest_client_requests_total", &label).await?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_since_and_per_drift() {
        let before = ApiWrites {
            sentinel: Some(10.0),
            operator: Some(100.0),
        };
        let after = ApiWrites {
            sentinel: Some(30.0),
            operator: None,
        };
        let made = after.since(before);
        assert_eq!(
            made,
            ApiWrites {
                sentinel: Some(20.0),
                operator: None
            }
        );
        assert_eq!(made.per(10).sentinel, Some(2.0));
        assert_eq!(made.per(0).sentinel, None);
    }
}
