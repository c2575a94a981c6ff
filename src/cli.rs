//! Command-line pieces both programs share: the flags of [`CommonArgs`], duration parsing and
//! the Kubernetes client.

use std::{
    marker::PhantomData,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use kube::{Client, Config, config::KubeConfigOptions, runtime::watcher};

use crate::{
    api_client::{self, Timeouts},
    leader::{Leadership, LeaseConfig},
};

/// What differs between the programs in their [`CommonArgs`].
pub trait Program {
    /// Default name of the program's Lease; also the prefix of a generated identity.
    const LEASE_NAME: &'static str;
}

/// Flags both programs take, with the same names, defaults and environment variables: the
/// cluster, leader election and this instance's identity. Flattened into each program's flags
/// (`#[command(flatten)]`); `P` gives the program's own Lease name.
#[derive(Clone, Debug, clap::Args)]
pub struct CommonArgs<P: Program + Clone + Send + Sync + 'static> {
    /// Kubeconfig to use (default: in-cluster configuration, then KUBECONFIG, then ~/.kube/config).
    #[arg(long, env = "KUBE_SENTINEL_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Compete for a Lease and act only while holding it (a standby keeps its watches warm).
    #[arg(long, env = "KUBE_SENTINEL_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Namespace of the Lease (default: `POD_NAMESPACE`, then the namespace of the client's
    /// configuration, in a cluster the program's own).
    #[arg(long, env = "KUBE_SENTINEL_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Name of the Lease (one per program).
    #[arg(long, env = "KUBE_SENTINEL_LEASE_NAME", default_value = P::LEASE_NAME)]
    pub lease_name: String,
    /// How long the Lease lasts without renewal.
    #[arg(long, env = "KUBE_SENTINEL_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// How long before expiry the holder renews (default: a third of the duration, 5s for 15s).
    #[arg(long, env = "KUBE_SENTINEL_LEASE_GRACE", value_parser = parse_duration)]
    pub lease_grace: Option<Duration>,
    /// This instance's identity in the Lease and in Events (default: `POD_NAME`, then
    /// `HOSTNAME`, then a generated one).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Longest wait for an API response to start, and between two parts of it (watches
    /// excepted): a stalled call fails and is retried instead of hanging.
    #[arg(long, env = "KUBE_SENTINEL_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// How long the API server keeps each watch open before it is reopened (no relist); a
    /// watch silent for this plus 5 s is presumed dead and reopened.
    #[arg(long, env = "KUBE_SENTINEL_WATCH_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub watch_timeout: Duration,
    #[arg(skip)]
    program: PhantomData<P>,
}

impl<P: Program + Clone + Send + Sync + 'static> CommonArgs<P> {
    /// A client for the cluster ([`kube_client`] with `--kubeconfig` and the timeouts).
    pub async fn client(&self) -> anyhow::Result<Client> {
        kube_client(self.kubeconfig.as_deref(), self.timeouts()).await
    }

    /// How long the program's main loop may go without turning before `/healthz` fails: four
    /// request timeouts (a loop waits for at most a few calls in a row, each with its deadline).
    pub fn liveness_limit(&self) -> Duration {
        self.request_timeout.saturating_mul(4)
    }

    /// `--request-timeout` and `--watch-timeout`.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            request: self.request_timeout,
            watch: self.watch_timeout,
        }
    }

    /// A watcher configuration with `--watch-timeout` (every watch of the program uses it).
    pub fn watch_config(&self) -> watcher::Config {
        watcher::Config::default().timeout(self.timeouts().watch_seconds())
    }

    /// `--identity`, else the host name, else the Lease name with a random suffix.
    pub fn identity(&self) -> String {
        self.identity
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| {
                let suffix = uuid::Uuid::new_v4().simple().to_string();
                format!("{}-{}", P::LEASE_NAME, &suffix[..8])
            })
    }

    /// The Lease settings for `identity`; `default_namespace` is the client's.
    pub fn lease_config(&self, default_namespace: &str, identity: String) -> LeaseConfig {
        LeaseConfig {
            namespace: self
                .lease_namespace
                .clone()
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .unwrap_or_else(|| default_namespace.to_owned()),
            name: self.lease_name.clone(),
            identity,
            duration: self.lease_duration,
            grace: self.lease_grace.unwrap_or(self.lease_duration / 3),
        }
    }

    /// Refuses Lease timings that cannot work: a duration outside 2s..1h (the Lease holds
    /// whole seconds), or a grace not shorter than the duration.
    pub fn validate(&self) -> anyhow::Result<()> {
        check_duration("--lease-duration", self.lease_duration, LEASE_DURATIONS)?;
        if let Some(grace) = self.lease_grace {
            check_duration("--lease-grace", grace, Duration::from_secs(1)..=LONGEST)?;
            anyhow::ensure!(
                grace < self.lease_duration,
                "--lease-grace ({grace:?}) must be shorter than --lease-duration ({:?})",
                self.lease_duration
            );
        }
        Ok(())
    }

    /// Competes for the Lease with `--leader-elect`; without it, always the leader.
    pub async fn leadership(
        &self,
        client: &Client,
        identity: &str,
        join: Join,
    ) -> anyhow::Result<Leadership> {
        if !self.leader_elect {
            return Ok(Leadership::always());
        }
        let config = self.lease_config(client.default_namespace(), identity.to_owned());
        match join {
            Join::AtOnce => Leadership::elect(client.clone(), config).await,
            Join::DeferringToAHolder => Leadership::elect_deferring(client.clone(), config).await,
        }
    }
}

/// When an instance starts competing for its Lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Join {
    /// At once.
    AtOnce,
    /// After one Lease duration if another instance holds it ([`Leadership::elect_deferring`]).
    DeferringToAHolder,
}

/// The longest duration any flag takes: longer is a typo, and would overflow a timer.
pub const LONGEST: Duration = Duration::from_secs(366 * 24 * 3600);

/// Lease durations the Lease can hold and an election can live with.
const LEASE_DURATIONS: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(2)..=Duration::from_secs(3600);

/// Refuses `value` of duration flag `flag` outside `range`, with one line naming the flag.
pub fn check_duration(
    flag: &str,
    value: Duration,
    range: std::ops::RangeInclusive<Duration>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        range.contains(&value),
        "{flag} must be between {} and {}, not {}",
        friendly(*range.start()),
        friendly(*range.end()),
        friendly(value)
    );
    Ok(())
}

/// `value` as the flags are written: `10s`, `1h 30m`, `8784h`.
fn friendly(value: Duration) -> String {
    match jiff::SignedDuration::try_from(value) {
        Ok(d) => format!("{d:#}"),
        Err(_) => format!("{value:?}"),
    }
}

/// Parses a duration flag: `2s`, `500ms`, `1m30s`, `10h` (jiff's friendly format), or a bare
/// number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("{text:?}: a duration must be a non-negative number of seconds"));
    }
    let signed: jiff::SignedDuration = text
        .parse()
        .map_err(|e| format!("{text:?} is not a duration like 2s, 500ms or 10h: {e}"))?;
    Duration::try_from(signed).map_err(|_| format!("{text:?}: a duration must not be negative"))
}

/// A client for the cluster named by `--kubeconfig`, else the usual places: in-cluster
/// configuration, `KUBECONFIG`, `~/.kube/config`, with `timeouts` on every call and no retry
/// layer of its own ([`api_client::build`]). Fails with one clear line when there is none.
pub async fn kube_client(kubeconfig: Option<&Path>, timeouts: Timeouts) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("using kubeconfig {}", path.display()))?
        }
        None => Config::infer().await.map_err(|e| {
            anyhow::anyhow!(
                "no Kubernetes cluster configuration found (pass --kubeconfig, set KUBECONFIG, \
                 or run in a cluster): {e}"
            )
        })?,
    };
    api_client::build(config, timeouts).context("building the Kubernetes client")
}

/// `error` and its causes on one line, `: `-separated, as `{:#}` prints them, but without a
/// cause its parent's message already ends with (kube's kubeconfig errors print their source
/// and return it as the cause too).
pub fn error_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_line_names_each_cause_once() {
        let missing = Path::new("/nonexistent/kube-sentinel.kubeconfig");
        let error = kube::config::Kubeconfig::read_from(missing)
            .context("reading kubeconfig /nonexistent/kube-sentinel.kubeconfig")
            .expect_err("the file does not exist");
        let line = error_line(&error);
        assert_eq!(line.matches("os error 2").count(), 1, "{line}");
        assert!(
            line.starts_with("reading kubeconfig /nonexistent"),
            "{line}"
        );
        let chained = anyhow::anyhow!("inner").context("middle").context("outer");
        assert_eq!(error_line(&chained), "outer: middle: inner");
    }

    #[derive(Clone, Debug)]
    struct Example;

    impl Program for Example {
        const LEASE_NAME: &'static str = "kube-sentinel-example";
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        common: CommonArgs<Example>,
    }

    #[test]
    fn common_flags_default_the_lease_to_the_program_and_the_grace_to_a_third() {
        use clap::Parser;
        let cli = Cli::try_parse_from(["example", "--lease-namespace", "ha"]).expect("parses");
        let lease = cli.common.lease_config("default", "me".into());
        assert_eq!(
            (
                lease.namespace.as_str(),
                lease.name.as_str(),
                lease.identity.as_str()
            ),
            ("ha", "kube-sentinel-example", "me")
        );
        assert_eq!(
            (lease.duration, lease.grace),
            (Duration::from_secs(15), Duration::from_secs(5))
        );
        let cli = Cli::try_parse_from([
            "example",
            "--lease-name",
            "mine",
            "--lease-duration",
            "4s",
            "--lease-grace",
            "1s",
        ])
        .expect("parses");
        let lease = cli.common.lease_config("default", "me".into());
        assert_eq!(lease.name, "mine");
        assert_eq!(
            (lease.duration, lease.grace),
            (Duration::from_secs(4), Duration::from_secs(1))
        );
    }

    #[test]
    fn parses_friendly_durations_and_refuses_nonsense() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10h"), Ok(Duration::from_secs(36_000)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        for bad in ["", "two", "-1", "-2s", "5 parsecs"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
