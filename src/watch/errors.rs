//! Watch errors counted by what they mean: an expired resource version (410 Gone, the watch
//! relists) is routine after a long disconnection, an unreachable or refusing API server is
//! not, and one counter for both hides which one an alert fired on.

use kube::runtime::watcher;
use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

/// Why a watch failed, as the `reason` label of a watch-error counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchErrorReason {
    /// 410 Gone: the resource version is too old; the watcher relists.
    Expired,
    /// No answer: connection refused, reset or timed out.
    Unreachable,
    /// 401: the credentials are not accepted.
    Unauthorized,
    /// 403: the identity lacks the rights.
    Forbidden,
    /// 404: the resource is not served (a CRD not installed).
    NotServed,
    /// 429 or 5xx: the API server is overloaded or failing.
    ServerBusy,
    /// Anything else.
    Other,
}

impl WatchErrorReason {
    /// Every reason, for counters exported at zero.
    pub const ALL: [Self; 7] = [
        Self::Expired,
        Self::Unreachable,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotServed,
        Self::ServerBusy,
        Self::Other,
    ];

    /// The reason of `error`.
    pub fn of(error: &watcher::Error) -> Self {
        let client_error = match error {
            watcher::Error::InitialListFailed(e)
            | watcher::Error::WatchStartFailed(e)
            | watcher::Error::WatchFailed(e) => e,
            watcher::Error::WatchError(status) => return Self::by_code(status.code),
            watcher::Error::NoResourceVersion => return Self::Other,
        };
        match client_error {
            kube::Error::Api(status) => Self::by_code(status.code),
            kube::Error::Service(_) | kube::Error::HyperError(_) => Self::Unreachable,
            _ => Self::Other,
        }
    }

    fn by_code(code: u16) -> Self {
        match code {
            410 => Self::Expired,
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            404 => Self::NotServed,
            429 | 500..=599 => Self::ServerBusy,
            _ => Self::Other,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Unreachable => "unreachable",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotServed => "not_served",
            Self::ServerBusy => "server_busy",
            Self::Other => "other",
        }
    }
}

/// A watch-error counter by [`WatchErrorReason`]; cheap to clone, every clone counts in the
/// same series.
#[derive(Clone, Debug, Default)]
pub struct WatchErrors(Family<[(&'static str, &'static str); 1], Counter>);

impl WatchErrors {
    /// Registers the counter as `name` in `registry`, every reason at zero (an alert on one
    /// reason finds its series before the first error).
    pub fn register(registry: &mut Registry, name: &str) -> Self {
        let errors = Self::default();
        for reason in WatchErrorReason::ALL {
            let _ = errors.0.get_or_create(&[("reason", reason.as_str())]);
        }
        registry.register(
            name,
            "Watch errors by reason, each retried with backoff (expired: 410 Gone, relisted)",
            errors.0.clone(),
        );
        errors
    }

    /// Counts `error` and returns its reason.
    pub fn record(&self, error: &watcher::Error) -> WatchErrorReason {
        let reason = WatchErrorReason::of(error);
        self.0.get_or_create(&[("reason", reason.as_str())]).inc();
        reason
    }

    /// How many errors of `reason` were counted.
    pub fn count(&self, reason: WatchErrorReason) -> u64 {
        self.0.get_or_create(&[("reason", reason.as_str())]).get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> Box<kube::core::Status> {
        kube::core::Status::failure("x", "y")
            .with_code(code)
            .boxed()
    }

    #[test]
    fn an_expired_watch_counts_apart_from_an_unreachable_or_refusing_server() {
        let errors = WatchErrors::default();
        let gone = watcher::Error::WatchError(status(410));
        let gone_at_start = watcher::Error::WatchStartFailed(kube::Error::Api(status(410)));
        let forbidden = watcher::Error::InitialListFailed(kube::Error::Api(status(403)));
        let busy = watcher::Error::WatchStartFailed(kube::Error::Api(status(429)));
        assert_eq!(errors.record(&gone), WatchErrorReason::Expired);
        assert_eq!(errors.record(&gone_at_start), WatchErrorReason::Expired);
        assert_eq!(errors.record(&forbidden), WatchErrorReason::Forbidden);
        assert_eq!(errors.record(&busy), WatchErrorReason::ServerBusy);
        assert_eq!(
            errors.record(&watcher::Error::NoResourceVersion),
            WatchErrorReason::Other
        );
        assert_eq!(errors.count(WatchErrorReason::Expired), 2);
        assert_eq!(errors.count(WatchErrorReason::Forbidden), 1);
        assert_eq!(errors.count(WatchErrorReason::Unreachable), 0);
    }

    #[test]
    fn every_reason_is_exported_before_its_first_error() {
        let mut registry = Registry::default();
        let _errors = WatchErrors::register(&mut registry, "watch_errors");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .expect("encoding into a String does not fail");
        for reason in WatchErrorReason::ALL {
            let series = format!("watch_errors_total{{reason=\"{}\"}} 0", reason.as_str());
            assert!(text.contains(&series), "{series} missing from:\n{text}");
        }
    }
}
