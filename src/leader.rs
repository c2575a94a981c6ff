//! Leader election on a `coordination.k8s.io/v1` Lease, shared by both programs.
//!
//! Built on `kube-lease-manager`: a background task keeps trying to hold the Lease and
//! publishes whether this instance leads on a watch channel. A standby keeps running (its
//! watches stay warm) and only gates its writes on [`Leadership::is_leader`], so a failover
//! costs at most one Lease duration, not a relist. A standby checks the Lease again when it
//! would expire, so even a released Lease passes over after up to one duration: keep the
//! duration short (the default flags use 15 s).

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::{sync::watch, task::JoinHandle};

/// Whether this instance may act, and the task that keeps it so.
pub struct Leadership {
    state: watch::Receiver<bool>,
    task: Option<JoinHandle<Result<()>>>,
}

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease (one per program).
    pub name: String,
    /// This instance's identity (the pod name in a cluster).
    pub identity: String,
    /// How long a lease lasts without renewal.
    pub duration: Duration,
    /// How long before expiry the holder renews.
    pub grace: Duration,
}

impl Leadership {
    /// Always the leader: for a single instance run without `--leader-elect`.
    pub fn always() -> Self {
        let (tx, state) = watch::channel(true);
        // Keeping no sender is fine: a closed channel still holds its last value.
        drop(tx);
        Self { state, task: None }
    }

    /// Starts competing for the Lease.
    pub async fn elect(client: Client, config: LeaseConfig) -> Result<Self> {
        let manager = manager(client, &config).await?;
        let (state, task) = manager.watch().await;
        tracing::info!(lease = %config.name, namespace = %config.namespace, identity = %config.identity, "competing for leadership");
        let task = tokio::spawn(async move {
            task.await.context("the election task")??;
            Ok(())
        });
        Ok(Self {
            state,
            task: Some(task),
        })
    }

    /// Starts competing for the Lease, after one Lease duration if another instance holds it.
    ///
    /// For the sentinel: a leader that dies takes its open debounce windows with it, and only
    /// an instance that was watching then (a warm standby) still knows the deletions in them;
    /// one that starts afterwards cannot. Deferring to the holder's standbys for a Lease
    /// duration lets a warm one win the handover (found by `kube-sentinel faults`:
    /// sentinel-leader-kill lost a Service deletion to a replacement that won). Alone, it takes
    /// over at most one duration later than it could have.
    pub async fn elect_deferring(client: Client, config: LeaseConfig) -> Result<Self> {
        let leases: kube::Api<Lease> = kube::Api::namespaced(client.clone(), &config.namespace);
        let holder = leases
            .get_opt(&config.name)
            .await
            .with_context(|| format!("reading Lease {}/{}", config.namespace, config.name))?
            .and_then(|lease| lease.spec?.holder_identity)
            .filter(|holder| !holder.is_empty() && *holder != config.identity);
        let Some(holder) = holder else {
            return Self::elect(client, config).await;
        };
        let manager = manager(client, &config).await?;
        tracing::info!(lease = %config.name, holder, wait = ?config.duration, "the Lease is held: deferring to its standbys");
        let (tx, state) = watch::channel(false);
        let task = tokio::spawn(join_after(manager, config.duration, tx));
        Ok(Self {
            state,
            task: Some(task),
        })
    }

    /// Whether this instance currently leads (false until it has joined).
    pub fn is_leader(&self) -> bool {
        *self.state.borrow()
    }

    /// A receiver that sees every change of leadership.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.state.clone()
    }

    /// Resolves once this instance leads.
    pub async fn until_leader(&mut self) {
        // An error means the election task is gone; the last value stays meaningful.
        let _ = self.state.wait_for(|leads| *leads).await;
    }

    /// Stops competing and gives the Lease up (clears its holder), for a graceful shutdown.
    ///
    /// ## Warning
    /// The election task stops only when every receiver is gone: drop the ones from
    /// [`Leadership::subscribe`] first, or this waits for them.
    pub async fn release(mut self) {
        let Some(task) = self.task.take() else { return };
        // Closing the channel makes the election task release the Lease and return.
        drop(self.state);
        match task.await {
            Ok(Ok(())) => tracing::info!("released the Lease"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not release the Lease; it will expire"),
            Err(e) => tracing::warn!(error = %e, "leader election task failed"),
        }
    }
}

async fn manager(client: Client, config: &LeaseConfig) -> Result<LeaseManager> {
    LeaseManagerBuilder::new(client, &config.name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_duration(config.duration.as_secs().max(2))
        .with_grace(config.grace.as_secs().max(1))
        .build()
        .await
        .with_context(|| format!("preparing Lease {}/{}", config.namespace, config.name))
}

/// Waits `wait`, then competes with `manager`, forwarding whether this instance leads to `tx`
/// until every receiver of it is gone; then releases the Lease.
async fn join_after(manager: LeaseManager, wait: Duration, tx: watch::Sender<bool>) -> Result<()> {
    tokio::select! {
        () = tokio::time::sleep(wait) => {}
        () = tx.closed() => return Ok(()),
    }
    tracing::info!("competing for leadership");
    let (mut leads, task) = manager.watch().await;
    loop {
        tokio::select! {
            changed = leads.changed() => {
                if changed.is_err() {
                    break;
                }
                tx.send_replace(*leads.borrow_and_update());
            }
            () = tx.closed() => break,
        }
    }
    // Dropping the last receiver makes the election task release the Lease and return.
    drop(leads);
    task.await.context("the election task")??;
    Ok(())
}
