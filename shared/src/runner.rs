//! The controller runner: watches, leader election and shutdown.
//!
//! The runner watches `PostgresDB` objects (all namespaces or one) and the
//! kinds of children the level owns, restricted by label selector to the
//! operator's own objects, so what is cached stays proportional to the
//! databases, not to the cluster. Changes to a child trigger its owner's
//! reconcile. Kinds a capability watches without the database owning them
//! (a `PostgresDBBackup` outlives its database) are watched the same way,
//! and a change to one triggers the reconcile of the database its instance
//! label names ([`database_of`]). Status writes do not change a
//! `PostgresDB`'s generation and are filtered out, so the operator's own
//! writes never trigger a reconcile storm. With leader election on, only the replica holding the Lease acts.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, ObjectMeta};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, WatchStreamExt, predicates, reflector, watcher};
use kube::{Client, Resource};
use kube_leader_election::{LeaseLock, LeaseLockParams, LeaseLockResult};
use tokio_util::sync::CancellationToken;

use crate::api::PostgresDB;
use crate::capability::{CompanionContext, Level};
use crate::error::Error;
use crate::health::{Leadership, Readiness};
use crate::keys::INSTANCE_LABEL;
use crate::names::managed_selector;
use crate::reconcile::{Context, error_chain, error_policy, reconcile};

/// The Lease every level competes for, so two operators of any level never
/// act on the same databases at once.
pub const LEASE_NAME: &str = "pgdb-operator";

/// How long the controller may take to stop gracefully once a shutdown
/// began (asked for, leadership lost, or a companion failed), before it is
/// dropped: the reconciles in flight finish within it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Leader election settings.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// This replica's identity.
    pub holder: String,
    /// How long a lease lasts without renewal.
    pub ttl: Duration,
}

/// How to run a level.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Watch one namespace instead of all.
    pub namespace: Option<String>,
    /// Act only while holding a Lease.
    pub leader_election: Option<LeaderElection>,
    /// Ready while the controller runs, or while standing by for the Lease.
    pub readiness: Readiness,
    /// Set while the controller runs: this replica acts.
    pub leading: Leadership,
    /// The Event reporter's instance (pod name); the level name when absent.
    pub instance: Option<String>,
    /// How the operator reaches databases for SQL.
    pub database_access: crate::sql::DatabaseAccess,
    /// The metrics `/metrics` serves, for a level with insights; created
    /// here when absent (an operator run in-process, without a health
    /// server).
    pub metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    /// The namespace the operator runs in, where operator-wide objects go
    /// ([`DEFAULT_OPERATOR_NAMESPACE`] when absent).
    pub operator_namespace: Option<String>,
    /// How often a level with insights measures each database
    /// ([`DEFAULT_METRICS_INTERVAL`] when absent).
    pub metrics_interval: Option<Duration>,
    /// How many databases are reconciled at once
    /// ([`DEFAULT_MAX_CONCURRENT_RECONCILES`] when absent; `Some(0)` is no
    /// bound at all, as kube-runtime reads it, which the CLI refuses).
    pub max_concurrent_reconciles: Option<u16>,
}

/// Where operator-wide objects go when no namespace is given.
pub const DEFAULT_OPERATOR_NAMESPACE: &str = "default";

/// How many databases are reconciled at once by default. Unbounded, a
/// burst of a thousand new databases had as many reconciles in flight,
/// each holding what it read, for no more throughput: the work is bound by
/// the API server and the CPU. Reconciles that wait on a slow server (a
/// frozen primary's probes time out, `shared::sql`) keep the rest moving
/// up to this many, and a reconcile that hangs is dropped after
/// `shared::reconcile::RECONCILE_TIMEOUT`.
/// A database is never reconciled twice at once, whatever the bound.
pub const DEFAULT_MAX_CONCURRENT_RECONCILES: u16 = 32;

/// How often a level with insights measures each database by default.
pub const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(30);

/// Runs `level` until `shutdown` completes (or leadership is lost).
pub async fn run(
    level: Level,
    client: Client,
    options: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    ensure_crd_served(&client, level.name).await?;
    let stop = CancellationToken::new();
    let on_shutdown = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        on_shutdown.cancel();
    });

    let lease = match &options.leader_election {
        Some(election) => match acquire(&client, election, &options.readiness, &stop).await? {
            Some(lock) => Some(lock),
            None => return Ok(()),
        },
        None => None,
    };
    let lost = CancellationToken::new();
    // Everything this run spawns stops with it, also when the run's future
    // is dropped rather than shut down (an operator killed in-process, as a
    // killed process would stop): a companion left running would go on
    // acting for an operator that is gone.
    let mut tasks = AbortOnDrop::default();
    if let (Some(lock), Some(election)) = (&lease, &options.leader_election) {
        tasks.push(
            tokio::spawn(keep_renewing(
                lock.clone(),
                election.ttl,
                stop.clone(),
                lost.clone(),
            ))
            .abort_handle(),
        );
    }

    let reporter = Reporter {
        controller: level.name.to_string(),
        instance: options.instance.clone(),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let metrics = match (&level.insights, &options.metrics) {
        (Some(_), Some(metrics)) => Some(metrics.clone()),
        (Some(insights), None) => Some(std::sync::Arc::new(crate::metrics::Metrics::new(Some(
            insights.database_series,
        )))),
        (None, _) => None,
    };
    let operator_namespace = options
        .operator_namespace
        .clone()
        .unwrap_or_else(|| DEFAULT_OPERATOR_NAMESPACE.to_string());
    let metrics_interval = options.metrics_interval.unwrap_or(DEFAULT_METRICS_INTERVAL);
    let owned: Vec<ApiResource> = level
        .capabilities
        .iter()
        .flat_map(|c| c.owned_kinds())
        .collect();
    let watched: Vec<ApiResource> = level
        .capabilities
        .iter()
        .flat_map(|c| c.watched_kinds())
        .collect();
    // Companions run under the same leadership: stopped when the operator
    // stops or loses the Lease, and one that fails stops the operator.
    let companions_stop = CancellationToken::new();
    let companion_failed = CancellationToken::new();
    let companions: Vec<_> = level
        .companions
        .iter()
        .map(|companion| {
            let context = CompanionContext {
                client: client.clone(),
                namespace: options.namespace.clone(),
                field_manager: level.field_manager(),
                instance: options.instance.clone(),
                shutdown: companions_stop.clone(),
                metrics: metrics.clone(),
                operator_namespace: operator_namespace.clone(),
                metrics_interval,
                database_access: options.database_access,
            };
            let run = (companion.run)(context);
            let name = companion.name;
            let failed = companion_failed.clone();
            tokio::spawn(async move {
                tracing::info!(companion = name, "companion controller running");
                let outcome = run.await;
                if let Err(error) = &outcome {
                    tracing::error!(companion = name, error = %error_chain(error), "companion controller failed; stopping");
                    failed.cancel();
                }
                outcome
            })
        })
        .collect();
    tasks.extend(companions.iter().map(tokio::task::JoinHandle::abort_handle));
    let changes = metrics.as_ref().and_then(|m| m.readings.take_changes());
    let context = std::sync::Arc::new(
        Context::new(client.clone(), level, recorder, options.database_access)
            .with_metrics(metrics)
            .with_operator_namespace(operator_namespace.clone()),
    );

    let databases: Api<PostgresDB> = match &options.namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    };
    let (reader, writer) = reflector::store();
    let trigger = watcher(databases, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    let mut controller = Controller::for_stream(trigger, reader).with_config(
        kube::runtime::controller::Config::default().concurrency(
            options
                .max_concurrent_reconciles
                .unwrap_or(DEFAULT_MAX_CONCURRENT_RECONCILES),
        ),
    );
    if let Some(changes) = changes {
        // A database whose reading's summary changed (a symptom appeared
        // or cleared) is reconciled, so its conditions follow.
        controller = controller
            .reconcile_on(futures::stream::unfold(changes, |mut changes| async move {
                changes.recv().await.map(|change| (change, changes))
            }));
    }
    let children = watcher::Config::default().labels(&managed_selector());
    let mut seen: Vec<ApiResource> = Vec::new();
    for resource in owned {
        if seen.contains(&resource) {
            continue;
        }
        let api: Api<DynamicObject> = match &options.namespace {
            Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        controller = controller.owns_with(api, resource.clone(), children.clone());
        seen.push(resource);
    }
    for resource in watched {
        if seen.contains(&resource) {
            continue;
        }
        let api: Api<DynamicObject> = match &options.namespace {
            Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        controller = controller.watches_with(
            api,
            resource.clone(),
            children.clone(),
            |object: DynamicObject| database_of(&object.metadata),
        );
        seen.push(resource);
    }
    let stopping = stop.clone();
    let losing = lost.clone();
    let failing = companion_failed.clone();
    let controller = controller.graceful_shutdown_on(async move {
        tokio::select! {
            () = stopping.cancelled() => {}
            () = losing.cancelled() => {}
            () = failing.cancelled() => {}
        }
    });

    options.readiness.set(true);
    options.leading.set(true);
    tracing::info!(
        namespace = options.namespace.as_deref().unwrap_or("(all)"),
        "controller running"
    );
    let running = controller
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                // Reconcile failures are logged by the error policy, with their retry.
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) | Ok(_) => {}
                Err(error) => tracing::warn!(error = %error_chain(&error), "controller"),
            }
        });
    // A graceful shutdown waits for the controller's cache of databases to
    // be filled first, and a watch stopped by the shutdown never fills it:
    // a stop (or a companion failing) that comes before it would wait for
    // ever. So the controller is dropped if it has not stopped shortly after
    // a shutdown began; a reconcile cut short is one a restart repeats.
    let (stopped, lost_lease, failed) = (stop.clone(), lost.clone(), companion_failed.clone());
    tokio::select! {
        () = running => {}
        () = async move {
            tokio::select! {
                () = stopped.cancelled() => {}
                () = lost_lease.cancelled() => {}
                () = failed.cancelled() => {}
            }
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::warn!("the controller did not stop within {SHUTDOWN_GRACE:?} of the shutdown; dropped it"),
    }
    options.readiness.set(false);
    options.leading.set(false);
    companions_stop.cancel();
    let mut companion_error = None;
    for handle in companions {
        match handle.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                companion_error.get_or_insert(error);
            }
            Err(join) => tracing::error!(error = %join, "a companion controller panicked"),
        }
    }

    if let Some(lock) = lease {
        if lost.is_cancelled() {
            return Err(Error::LostLeadership);
        }
        if let Err(error) = lock.step_down().await {
            tracing::warn!(error = %error_chain(&error), "could not release the leader lease");
        }
    }
    if let Some(error) = companion_error {
        return Err(error);
    }
    tracing::info!("controller stopped");
    Ok(())
}

/// Aborts the tasks it holds when dropped.
#[derive(Default)]
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl AbortOnDrop {
    fn push(&mut self, task: tokio::task::AbortHandle) {
        self.0.push(task);
    }
}

impl Extend<tokio::task::AbortHandle> for AbortOnDrop {
    fn extend<I: IntoIterator<Item = tokio::task::AbortHandle>>(&mut self, tasks: I) {
        self.0.extend(tasks);
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// The database whose reconcile a change to a watched (not owned) object
/// triggers: the one its instance label names, in its namespace. An object
/// without the label, or without a namespace, triggers nothing.
pub fn database_of(metadata: &ObjectMeta) -> Option<ObjectRef<PostgresDB>> {
    let name = metadata.labels.as_ref()?.get(INSTANCE_LABEL)?;
    let namespace = metadata.namespace.as_deref()?;
    if name.is_empty() {
        return None;
    }
    Some(ObjectRef::new(name).within(namespace))
}

/// Fails with a clear message when the cluster does not serve the CRD.
async fn ensure_crd_served(client: &Client, binary: &str) -> Result<(), Error> {
    let api: Api<PostgresDB> = Api::all(client.clone());
    match api.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(Error::CrdMissing {
            binary: binary.to_string(),
        }),
        Err(source) => Err(Error::Kube {
            action: format!("list {}", PostgresDB::plural(&())),
            source: Box::new(source),
        }),
    }
}

/// Waits for the Lease; `None` when shutdown came first. A replica that
/// finds another one leading is ready while it stands by, as
/// controller-runtime's managers are: readiness says the replica can take
/// over, and a Deployment of two replicas could never finish a rollout if
/// only its leader were ready.
async fn acquire(
    client: &Client,
    election: &LeaderElection,
    readiness: &Readiness,
    stop: &CancellationToken,
) -> Result<Option<std::sync::Arc<LeaseLock>>, Error> {
    let lock = std::sync::Arc::new(LeaseLock::new(
        client.clone(),
        &election.namespace,
        LeaseLockParams {
            lease_name: election.lease_name.clone(),
            holder_id: election.holder.clone(),
            lease_ttl: election.ttl,
        },
    ));
    let mut announced = false;
    loop {
        let attempt = match lock.try_acquire_or_renew().await {
            // Another replica wrote the Lease first: try again next round,
            // as client-go's leader election does.
            Err(error) if lost_race(&error) => {
                tracing::debug!(%error, "another replica wrote the leader lease first");
                None
            }
            Err(source) => {
                return Err(Error::LeaderElection {
                    what: format!(
                        "acquire Lease {}/{}",
                        election.namespace, election.lease_name
                    ),
                    source: Box::new(source),
                });
            }
            Ok(attempt) => Some(attempt),
        };
        match attempt {
            Some(LeaseLockResult::Acquired(_)) => {
                tracing::info!(holder = election.holder, "acquired the leader lease");
                return Ok(Some(lock));
            }
            Some(LeaseLockResult::NotAcquired(lease)) => {
                readiness.set(true);
                if !announced {
                    let holder = lease
                        .spec
                        .and_then(|s| s.holder_identity)
                        .unwrap_or_default();
                    tracing::info!(%holder, "another replica leads; standing by");
                    announced = true;
                }
            }
            None => {}
        }
        tokio::select! {
            () = stop.cancelled() => {
                readiness.set(false);
                return Ok(None);
            }
            () = tokio::time::sleep(election.ttl / 3) => {}
        }
    }
}

/// Whether a Lease write failed only because another replica wrote it
/// between this replica's read and write (409: it created the Lease, or
/// changed it): replicas starting together race so.
fn lost_race(error: &kube_leader_election::Error) -> bool {
    use kube_leader_election::Error as Lease;
    match error {
        Lease::CreateLease(kube::Error::Api(status))
        | Lease::AcquireLease(kube::Error::Api(status))
        | Lease::RenewLease(kube::Error::Api(status)) => status.code == 409,
        _ => false,
    }
}

/// Renews the Lease every third of its lifetime; cancels `lost` when
/// another replica took it or renewal kept failing for a whole lifetime.
async fn keep_renewing(
    lock: std::sync::Arc<LeaseLock>,
    ttl: Duration,
    stop: CancellationToken,
    lost: CancellationToken,
) {
    let mut last_renewal = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(ttl / 3) => {}
        }
        match lock.try_acquire_or_renew().await {
            Ok(LeaseLockResult::Acquired(_)) => last_renewal = tokio::time::Instant::now(),
            Ok(LeaseLockResult::NotAcquired(_)) => {
                tracing::error!("another replica took the leader lease; stopping");
                lost.cancel();
                return;
            }
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "could not renew the leader lease");
                if last_renewal.elapsed() >= ttl {
                    lost.cancel();
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::common_labels;

    fn metadata(namespace: Option<&str>, labels: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some("orders-20260101-030000".into()),
            namespace: namespace.map(String::from),
            labels: labels.map(common_labels),
            ..Default::default()
        }
    }

    #[test]
    fn a_watched_object_triggers_the_database_its_instance_label_names() {
        let target = database_of(&metadata(Some("shop"), Some("orders")));
        assert_eq!(target, Some(ObjectRef::new("orders").within("shop")));
    }

    #[test]
    fn a_watched_object_without_the_instance_label_or_a_namespace_triggers_nothing() {
        assert_eq!(database_of(&metadata(Some("shop"), None)), None);
        assert_eq!(database_of(&metadata(None, Some("orders"))), None);
        let mut unlabelled = metadata(Some("shop"), Some("orders"));
        unlabelled
            .labels
            .get_or_insert_default()
            .remove(INSTANCE_LABEL);
        assert_eq!(database_of(&unlabelled), None);
    }

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: "leases.coordination.k8s.io \"pgdb-operator\" already exists".into(),
            ..Default::default()
        }))
    }

    #[test]
    fn a_replica_that_loses_the_race_to_create_or_take_the_lease_tries_again() {
        use kube_leader_election::Error as Lease;
        assert!(lost_race(&Lease::CreateLease(api_error(409))));
        assert!(lost_race(&Lease::AcquireLease(api_error(409))));
        assert!(!lost_race(&Lease::CreateLease(api_error(403))));
        assert!(!lost_race(&Lease::GetLease(api_error(409))));
    }
}
