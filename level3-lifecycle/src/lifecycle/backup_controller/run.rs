//! The backup controller's I/O: watch backups, their Jobs and their
//! pods; for each backup read what [`super::decide`] needs, and apply the
//! [`super::Step`] it returns.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::api::{
    Api, ApiResource, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy,
};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use shared::api::PostgresDB;
use shared::backup::PostgresDBBackup;
use shared::capability::{Companion, CompanionContext, CompanionRun, Observed};
use shared::error::{Error, retry_delay};
use shared::keys::{BACKUP_FILES_FINALIZER, BACKUP_LABEL, JOB_NAME_LABEL, NEVER_PRUNE_ANNOTATION};
use shared::reconcile::error_chain;

use super::job::{Destination, backup_job_name, cleanup_job_name};
use super::{Step, decide, destination};
use crate::lifecycle::names::{backup_credentials_secret, backup_volume};
use crate::lifecycle::verify::verify_job_name;

/// How long stopping may wait for running reconciles.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often a settled backup is looked at again.
const RESYNC: Duration = Duration::from_secs(600);

/// The backup controller as a companion of the `PostgresDB` reconcile.
pub fn companion() -> Companion {
    Companion {
        name: "backups",
        run: |context| -> CompanionRun { Box::pin(run(context)) },
    }
}

struct Context {
    client: Client,
    manager: String,
    recorder: Recorder,
    failures: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    /// Where finished backups are counted, when the level serves metrics.
    metrics: Option<Arc<shared::metrics::Metrics>>,
}

fn kube_error(action: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube {
        action,
        source: Box::new(source),
    }
}

/// Runs the backup controller until `context.shutdown` is cancelled.
pub async fn run(context: CompanionContext) -> Result<(), Error> {
    let client = context.client.clone();
    let backups: Api<PostgresDBBackup> = match &context.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    if let Err(error) = backups.list_metadata(&ListParams::default().limit(1)).await {
        return Err(Error::Kube {
            action: "list postgresdbbackups.pgdb.example.com (install the CRDs first: `level3-lifecycle crd | kubectl apply -f -`)".into(),
            source: Box::new(error),
        });
    }
    let (jobs, pods): (Api<Job>, Api<Pod>) = match &context.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let labelled = watcher::Config::default().labels(BACKUP_LABEL);
    let reporter = Reporter {
        controller: format!(
            "{}-backups",
            context.field_manager.trim_start_matches("pgdb-")
        ),
        instance: context.instance.clone(),
    };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        manager: context.field_manager.clone(),
        failures: Default::default(),
        metrics: context.metrics.clone(),
    });
    let shutdown = context.shutdown.clone();
    let running = Controller::new(backups, watcher::Config::default())
        .owns(jobs, labelled.clone())
        .watches(pods, labelled, |pod: Pod| {
            let backup = pod.labels().get(BACKUP_LABEL)?.clone();
            Some(ObjectRef::<PostgresDBBackup>::new(&backup).within(&pod.namespace()?))
        })
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) | Ok(_) => {}
                Err(error) => tracing::warn!(error = %error_chain(&error), "backup controller"),
            }
        });
    // A graceful shutdown waits for the watch cache to be filled first; a
    // shutdown before that would wait for ever, so it gets a bound.
    let stopping = context.shutdown.clone();
    tokio::select! {
        () = running => {}
        () = async move {
            stopping.cancelled().await;
            tokio::time::sleep(STOP_GRACE).await;
        } => tracing::warn!("the backup controller did not stop gracefully; dropped it"),
    }
    Ok(())
}

fn error_policy(backup: Arc<PostgresDBBackup>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = format!(
        "{}/{}",
        backup.namespace().unwrap_or_default(),
        backup.name_any()
    );
    let failures = {
        let mut map = ctx
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = map.entry(key).or_insert(0);
        *count += 1;
        *count
    };
    let delay = retry_delay(failures);
    tracing::warn!(backup = backup.name_any(), failures, retry_in = ?delay, error = %error_chain(error), "backup reconcile failed");
    Action::requeue(delay)
}

async fn read_named<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    observed: &mut Observed,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let resource = ApiResource::erase::<K>(&());
    observed.mark_queried(&resource, name);
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    if let Some(object) = api.get_opt(name).await.map_err(kube_error(format!(
        "read {} {namespace}/{name}",
        resource.kind
    )))? {
        put(observed, &object)?;
    }
    Ok(())
}

fn put<K: Resource<DynamicType = ()> + Serialize>(
    observed: &mut Observed,
    object: &K,
) -> Result<(), Error> {
    let resource = ApiResource::erase::<K>(&());
    let mut value = serde_json::to_value(object).map_err(|source| Error::Serialize {
        what: object.meta().name.clone().unwrap_or_default(),
        source,
    })?;
    value["apiVersion"] = resource.api_version.clone().into();
    value["kind"] = resource.kind.clone().into();
    let raw = serde_json::from_value(value).map_err(|source| Error::Serialize {
        what: object.meta().name.clone().unwrap_or_default(),
        source,
    })?;
    observed.insert(&resource, raw);
    Ok(())
}

/// Reads what deciding about `backup` needs.
async fn observe(client: &Client, backup: &PostgresDBBackup) -> Result<Observed, Error> {
    let namespace = backup.namespace().unwrap_or_default();
    let name = backup.name_any();
    let database = &backup.spec.database;
    let mut observed = Observed::default();
    read_named::<PostgresDB>(client, &namespace, database, &mut observed).await?;
    let all: Api<PostgresDBBackup> = Api::namespaced(client.clone(), &namespace);
    for other in all
        .list(&ListParams::default())
        .await
        .map_err(kube_error(format!(
            "list the PostgresDBBackups of {namespace}"
        )))?
    {
        put(&mut observed, &other)?;
    }
    let status = backup.status.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let mut job_names = vec![
        backup_job_name(&name),
        cleanup_job_name(&name),
        verify_job_name(&name),
    ];
    if let Some(job) = &status.job {
        job_names.push(job.clone());
    }
    job_names.dedup();
    for job in &job_names {
        read_named::<Job>(client, &namespace, job, &mut observed).await?;
        for pod in pods
            .list(&ListParams::default().labels(&format!("{JOB_NAME_LABEL}={job}")))
            .await
            .map_err(kube_error(format!("list the pods of Job {job}")))?
        {
            put(&mut observed, &pod)?;
        }
    }
    let mut secrets = vec![backup_credentials_secret(database)];
    let mut claims = vec![backup_volume(database)];
    let db = observed.get::<PostgresDB>(database);
    let destinations = db
        .as_ref()
        .and_then(|db| destination(db).ok())
        .into_iter()
        .chain(
            status
                .location
                .as_ref()
                .and_then(Destination::of_location)
                .map(|(d, _)| d),
        );
    for dest in destinations {
        match dest {
            Destination::Volume { claim } => claims.push(claim),
            Destination::S3(s3) => secrets.push(s3.credentials_secret),
        }
    }
    secrets.dedup();
    claims.dedup();
    for secret in &secrets {
        read_named::<Secret>(client, &namespace, secret, &mut observed).await?;
    }
    for claim in &claims {
        read_named::<PersistentVolumeClaim>(client, &namespace, claim, &mut observed).await?;
    }
    Ok(observed)
}

async fn reconcile(cached: Arc<PostgresDBBackup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    let api: Api<PostgresDBBackup> = Api::namespaced(ctx.client.clone(), &namespace);
    // The watch cache may lag behind this controller's own status write.
    let Some(backup) = api.get_opt(&name).await.map_err(kube_error(format!(
        "read PostgresDBBackup {namespace}/{name}"
    )))?
    else {
        return Ok(Action::await_change());
    };
    let observed = observe(&ctx.client, &backup).await?;
    let step = decide(&backup, &observed, jiff::Timestamp::now());
    apply(&ctx, &api, &backup, step.clone()).await?;
    ctx.failures
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&format!("{namespace}/{name}"));
    Ok(match step.requeue {
        Some(after) => Action::requeue(after),
        None => Action::requeue(RESYNC),
    })
}

async fn apply(
    ctx: &Context,
    api: &Api<PostgresDBBackup>,
    backup: &PostgresDBBackup,
    step: Step,
) -> Result<(), Error> {
    let name = backup.name_any();
    let namespace = backup.namespace().unwrap_or_default();
    if let Some(labels) = &step.adopt {
        let body = json!({
            "apiVersion": PostgresDBBackup::api_version(&()),
            "kind": PostgresDBBackup::kind(&()),
            "metadata": {
                "name": name,
                "labels": labels,
                "annotations": { NEVER_PRUNE_ANNOTATION: "true" },
            },
        });
        api.patch(
            &name,
            &PatchParams::apply(&format!("{}-backups", ctx.manager)).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(kube_error(format!("label PostgresDBBackup {name}")))?;
        tracing::info!(backup = name, "adopted: labelled with its database");
    }
    if step.add_finalizer {
        set_finalizer(api, &name, true).await?;
    }
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    if let Some(job) = &step.delete_job {
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match jobs.delete(job, &params).await {
            Ok(_) => tracing::info!(backup = name, job, "deleted Job"),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(kube_error(format!("delete Job {job}"))(error)),
        }
    }
    if let Some(job) = &step.create {
        let job_name = job.name_any();
        match jobs.create(&PostParams::default(), job).await {
            Ok(_) => tracing::info!(backup = name, job = job_name, "created Job"),
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(kube_error(format!("create Job {job_name}"))(error)),
        }
    }
    if let Some(status) = &step.status {
        let body = json!({
            "apiVersion": PostgresDBBackup::api_version(&()),
            "kind": PostgresDBBackup::kind(&()),
            "status": status,
        });
        api.patch_status(
            &name,
            &PatchParams::apply(&ctx.manager).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(kube_error(format!(
            "write the status of PostgresDBBackup {name}"
        )))?;
        tracing::info!(backup = name, phase = ?status.phase, "status updated");
        if let (Some(metrics), Some(result)) = (&ctx.metrics, super::finished(backup, status)) {
            metrics.operator.backup_finished(result);
        }
    }
    let reference = backup.object_ref(&());
    for event in &step.events {
        let published = ctx
            .recorder
            .publish(
                &Event {
                    type_: event.type_,
                    reason: event.reason.into(),
                    note: Some(event.message.chars().take(1000).collect()),
                    action: "Backup".into(),
                    secondary: None,
                },
                &reference,
            )
            .await;
        if let Err(error) = published {
            tracing::warn!(%error, reason = event.reason, "could not publish an Event");
        }
    }
    if step.remove_finalizer {
        set_finalizer(api, &name, false).await?;
        tracing::info!(backup = name, "files deleted; finalizer removed");
    }
    Ok(())
}

/// Adds or removes [`BACKUP_FILES_FINALIZER`], keeping the others: a
/// merge patch carrying the resourceVersion read, so a concurrent change
/// of the list is a conflict (retried), never lost.
async fn set_finalizer(
    api: &Api<PostgresDBBackup>,
    name: &str,
    present: bool,
) -> Result<(), Error> {
    let Some(current) = api
        .get_opt(name)
        .await
        .map_err(kube_error(format!("read PostgresDBBackup {name}")))?
    else {
        return Ok(());
    };
    let has = current
        .finalizers()
        .iter()
        .any(|f| f == BACKUP_FILES_FINALIZER);
    if has == present {
        return Ok(());
    }
    let mut finalizers: Vec<String> = current
        .finalizers()
        .iter()
        .filter(|f| *f != BACKUP_FILES_FINALIZER)
        .cloned()
        .collect();
    if present {
        finalizers.push(BACKUP_FILES_FINALIZER.into());
    }
    let body = json!({
        "metadata": {
            "resourceVersion": current.resource_version(),
            "finalizers": finalizers,
        }
    });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map_err(kube_error(format!(
            "update the finalizers of PostgresDBBackup {name}"
        )))?;
    Ok(())
}
