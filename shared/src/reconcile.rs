//! One reconcile: read the world, decide, apply what differs, report.
//!
//! The steps are the same at every level; only the capabilities change.
//! Deciding is a pure function of the `PostgresDB` and what was read
//! ([`decide`], [`assess`]), so every decision is unit-tested; the I/O
//! around it is small: queries (and, from Level 2, SQL probes), server-side
//! applies of what changed, deletions asked for and of orphans no capability
//! desires any more ([`crate::prune`]), SQL statements asked for, one status
//! patch when the status differs, and Events for what is news. A database
//! being deleted that carries the core's finalizer gets the capabilities'
//! finalize steps instead ([`crate::finalizer`]), applied the same way.
//! With metrics (Level 4 and above, [`crate::metrics`]) the core counts
//! as it works: each reconcile with its duration and, when it failed, the
//! reason ([`Error::reason`]); each object written, by kind and change;
//! each SQL probe, by result.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::Instrument;

use crate::api::{PostgresDB, PostgresDBStatus};
use crate::apply::{self, Change};
use crate::capability::{
    ApplyReport, Deletion, DeletionOrigin, Desired, DesiredObject, Level, Note, Observed, Query,
    QuerySelector, SpecProblem, StatusDraft, describe,
};
use crate::conditions::{Assessment, DEGRADED, PROGRESSING, READY, SPEC_IMPLEMENTED};
use crate::error::{Error, retry_delay};
use crate::finalizer;
use crate::names::{instance_selector, name_problem};
use crate::prune;
use crate::sql::{Connector, DatabaseAccess, SqlAction};

/// How long a settled database waits for its periodic re-check.
pub const RESYNC: Duration = Duration::from_secs(300);
/// How soon a database that is not ready yet is looked at again.
pub const RECHECK: Duration = Duration::from_secs(5);
/// How soon a database whose status just changed is looked at again:
/// capabilities may decide from status (a rollout's start time), and status
/// writes do not trigger reconciles by themselves. At rest nothing changes,
/// so this never repeats.
pub const AFTER_STATUS_CHANGE: Duration = Duration::from_secs(1);

/// What a reconcile needs: the client, the level and the Event recorder.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// The level being run.
    pub level: Level,
    /// Publishes Events.
    pub recorder: Recorder,
    /// Reaches the databases for the capabilities' SQL.
    pub connector: Connector,
    /// The metrics, when the level serves them: counted as the core works,
    /// and the source of each database's latest reading.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// The namespace the operator runs in, told to the capabilities
    /// ([`Observed::operator_namespace`]).
    pub operator_namespace: String,
    /// Consecutive failures per object, for the retry backoff. This is
    /// pacing, not truth about the cluster: losing it on restart is harmless.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context for `level`, reaching databases the `access` way.
    pub fn new(client: Client, level: Level, recorder: Recorder, access: DatabaseAccess) -> Self {
        Self {
            connector: Connector::new(client.clone(), access),
            client,
            level,
            recorder,
            metrics: None,
            operator_namespace: crate::runner::DEFAULT_OPERATOR_NAMESPACE.to_string(),
            failures: Mutex::default(),
        }
    }

    /// The same context, counting into `metrics` and reading databases'
    /// readings from it.
    pub fn with_metrics(mut self, metrics: Option<Arc<crate::metrics::Metrics>>) -> Self {
        if let Some(metrics) = &metrics {
            metrics.operator.initialise(self.level.name);
        }
        self.metrics = metrics;
        self
    }

    /// The same context, telling the capabilities that the operator runs
    /// in `namespace`.
    pub fn with_operator_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.operator_namespace = namespace.into();
        self
    }

    fn record_outcome(&self, key: &str, failed: bool) -> u32 {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if failed {
            let count = failures.entry(key.to_string()).or_insert(0);
            *count += 1;
            *count
        } else {
            failures.remove(key);
            0
        }
    }
}

/// What the reconcile decided to do with the children.
#[derive(Clone, Debug)]
pub enum Decision {
    /// `spec.paused`: touch nothing.
    Paused,
    /// The spec cannot be served: touch nothing and say why.
    Invalid(Vec<SpecProblem>),
    /// Write these objects (the list is empty at rest).
    Apply {
        /// Objects to write, with the reason.
        changes: Vec<(DesiredObject, Change)>,
        /// Objects to delete, after the writes.
        deletions: Vec<Deletion>,
        /// SQL to run, after the deletions.
        sql: Vec<SqlAction>,
        /// Events the capabilities asked for.
        notes: Vec<Note>,
    },
}

/// Decides what to write, from the database, what was observed and the
/// reconcile's clock (the same `now` [`assess`] is given).
pub fn decide(
    level: &Level,
    db: &PostgresDB,
    observed: &Observed,
    now: jiff::Timestamp,
) -> Result<Decision, Error> {
    if db.spec.paused {
        return Ok(Decision::Paused);
    }
    let mut problems: Vec<SpecProblem> = Vec::new();
    if let Some(message) = name_problem(&db.name_any()) {
        problems.push(SpecProblem::new("metadata.name", "InvalidName", message));
    }
    problems.extend(
        level
            .capabilities
            .iter()
            .flat_map(|c| c.validate(db, observed)),
    );
    if !problems.is_empty() {
        return Ok(Decision::Invalid(problems));
    }
    let mut desired = Desired::default();
    for capability in &level.capabilities {
        capability.desire(db, observed, now, &mut desired)?;
    }
    let orphans = prune::orphans(level, db, observed, &desired);
    let mut parts = desired.into_parts();
    parts.deletions.extend(orphans);
    let mut changes = Vec::new();
    for mut object in parts.objects {
        apply::decorate(&mut object, db)?;
        if let Some(change) = apply::change_needed(&object, apply::live(observed, &object))? {
            changes.push((object, change));
        }
    }
    Ok(Decision::Apply {
        changes,
        deletions: parts.deletions,
        sql: parts.sql,
        notes: parts.notes,
    })
}

/// Assesses status: what the capabilities report, then what the core knows
/// (invalid spec, pause, sections not implemented, writes in flight).
pub fn assess(
    level: &Level,
    db: &PostgresDB,
    observed: &Observed,
    decision: &Decision,
    report: &ApplyReport,
    now: jiff::Timestamp,
) -> StatusDraft {
    let mut draft = StatusDraft {
        now,
        refused: matches!(decision, Decision::Invalid(_)),
        ..Default::default()
    };
    for capability in &level.capabilities {
        capability.assess(db, observed, report, &mut draft);
    }
    let conditions = &mut draft.conditions;
    match decision {
        Decision::Paused => {
            conditions.set(
                PROGRESSING,
                Assessment::no(
                    "Paused",
                    "spec.paused is true: the operator changes nothing",
                ),
            );
        }
        Decision::Invalid(problems) => {
            let first = &problems[0];
            let message = problems
                .iter()
                .map(|p| format!("{}: {}", p.field, p.message))
                .collect::<Vec<_>>()
                .join("; ");
            conditions.set(
                READY,
                Assessment::no(&first.reason, format!("{message}. Nothing was changed.")).warn(),
            );
            conditions.set(
                PROGRESSING,
                Assessment::no("SpecNotServable", "waiting for the spec to be corrected"),
            );
        }
        Decision::Apply { .. } => {
            if report.wrote_anything() {
                let what: Vec<String> = report
                    .created
                    .iter()
                    .chain(&report.updated)
                    .chain(&report.repaired)
                    .map(describe)
                    .collect();
                conditions.set(
                    PROGRESSING,
                    Assessment::yes("Applying", format!("applied {}", what.join(", "))),
                );
            }
        }
    }
    let missing = level.unimplemented_sections(db);
    conditions.set(
        SPEC_IMPLEMENTED,
        if missing.is_empty() {
            Assessment::yes(
                "AllSectionsImplemented",
                format!("{} implements every section in use", level.name),
            )
        } else {
            let fields = missing
                .iter()
                .map(|s| format!("spec.{s}"))
                .collect::<Vec<_>>()
                .join(", ");
            Assessment::no(
                "SectionNotImplemented",
                format!(
                    "{fields} not implemented by {}; ignored (a higher level implements it)",
                    level.name
                ),
            )
            .warn()
        },
    );
    conditions.set_default(
        READY,
        Assessment::no("NotObserved", "no database pod has been observed"),
    );
    conditions.set_default(
        PROGRESSING,
        Assessment::no("ReconcileComplete", "the cluster matches the spec"),
    );
    conditions.set_default(
        DEGRADED,
        Assessment::no("NoFailures", "no failure observed"),
    );
    draft
}

/// The status to write: the draft with phase, conditions and
/// observedGeneration filled in; equal to the current status at rest.
pub fn next_status(db: &PostgresDB, draft: StatusDraft, now: Time) -> PostgresDBStatus {
    let previous = db.status.clone().unwrap_or_default();
    let ever_ready = previous.current_version.is_some() || draft.fields.current_version.is_some();
    let mut status = draft.fields;
    status.phase = Some(draft.conditions.phase(db.spec.paused, ever_ready));
    status.conditions =
        draft
            .conditions
            .to_conditions(&previous.conditions, db.metadata.generation, now);
    status.observed_generation = db.metadata.generation;
    status
}

/// The Events a reconcile publishes: one per write, the capabilities'
/// notes, and condition transitions that are news.
pub fn events_for(
    db: &PostgresDB,
    decision: &Decision,
    report: &ApplyReport,
    draft: &StatusDraft,
) -> Vec<Note> {
    let mut notes = Vec::new();
    let changes = [
        (&report.created, EventType::Normal, "Created", "created"),
        (
            &report.updated,
            EventType::Normal,
            "Updated",
            "updated to match the spec:",
        ),
        (
            &report.repaired,
            EventType::Warning,
            "DriftRepaired",
            "changed outside the operator; restored",
        ),
        (
            &report.pruned,
            EventType::Normal,
            prune::PRUNED_REASON,
            "deleted, as no capability desires it any more:",
        ),
    ];
    for (objects, type_, reason, verb) in changes {
        for object in objects {
            notes.push(Note {
                type_,
                reason: reason.to_string(),
                message: format!("{verb} {}", describe(object)),
                related: Some(object.clone()),
            });
        }
    }
    if let Decision::Apply {
        notes: extra, sql, ..
    } = decision
    {
        notes.extend(extra.iter().cloned());
        for action in sql {
            if report.sql_ran.contains(&action.reason) {
                notes.push(Note {
                    type_: EventType::Normal,
                    reason: action.reason.clone(),
                    message: action.message.clone(),
                    related: None,
                });
            } else if report.sql_failed.contains(&action.reason) {
                notes.push(Note {
                    type_: EventType::Warning,
                    reason: "SqlFailed".into(),
                    message: format!(
                        "could not run {} on pod {} ({}); will retry",
                        action.statement, action.target.pod, action.reason
                    ),
                    related: None,
                });
            }
        }
    }
    let previous = db
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    for (type_, assessment) in draft.conditions.transitions(previous) {
        let reason = if type_ == READY && assessment.is_true() {
            "DatabaseReady"
        } else {
            assessment.reason.as_str()
        };
        notes.push(Note {
            type_: assessment.event_type,
            reason: reason.to_string(),
            message: assessment.message.clone(),
            related: None,
        });
    }
    notes
}

/// Reads what the level's capabilities asked for.
pub async fn observe(
    client: &Client,
    db: &PostgresDB,
    queries: &[Query],
) -> Result<Observed, Error> {
    let namespace = db.namespace().unwrap_or_default();
    let mut observed = Observed::default();
    // Lists first: an object a list returned needs no GET of its own (a
    // name names one object in the namespace), so a reconcile of a
    // database whose children all exist reads each kind once.
    let (lists, named): (Vec<&Query>, Vec<&Query>) = queries
        .iter()
        .partition(|q| !matches!(q.selector, QuerySelector::Name(_)));
    for query in lists.into_iter().chain(named) {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &namespace, &query.resource);
        match &query.selector {
            QuerySelector::Name(name) => {
                observed.mark_queried(&query.resource, name);
                if observed.raw(&query.resource, name).is_some() {
                    continue;
                }
                let found = api.get_opt(name).await.map_err(|source| Error::Kube {
                    action: format!("read {} {namespace}/{name}", query.resource.kind),
                    source: Box::new(source),
                })?;
                if let Some(object) = found {
                    observed.insert(&query.resource, object);
                }
            }
            QuerySelector::Instance => {
                let params = ListParams::default().labels(&instance_selector(&db.name_any()));
                let list = match api.list(&params).await {
                    Ok(list) => list,
                    // A list answers 404 only when the kind is not served
                    // (its CRD is not installed): the capability that asked
                    // reports it (`Observed::is_served`); it is no failure.
                    Err(kube::Error::Api(status)) if status.code == 404 => {
                        tracing::debug!(kind = query.resource.kind, "not served");
                        observed.mark_unserved(&query.resource);
                        continue;
                    }
                    Err(source) => {
                        return Err(Error::Kube {
                            action: format!(
                                "list {} of {namespace}/{}",
                                query.resource.plural,
                                db.name_any()
                            ),
                            source: Box::new(source),
                        });
                    }
                };
                observed.mark_listed(&query.resource);
                for object in list.items {
                    observed.insert(&query.resource, object);
                }
            }
            QuerySelector::InstanceOf(other) => {
                // Not marked listed: the database's own objects of the kind
                // are not what was listed.
                let params = ListParams::default().labels(&instance_selector(other));
                let list = api.list(&params).await.map_err(|source| Error::Kube {
                    action: format!("list {} of {namespace}/{other}", query.resource.plural),
                    source: Box::new(source),
                })?;
                for object in list.items {
                    observed.insert(&query.resource, object);
                }
            }
        }
    }
    Ok(observed)
}

/// How long one reconcile may run before it is dropped and retried. SQL
/// calls have bounds of their own (`shared::sql`); the API client has no
/// read timeout, so a call the API server never answers would hold one of
/// the runner's reconcile slots for ever. Every step is idempotent, so a
/// dropped reconcile is simply done again.
pub const RECONCILE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Reconciles one `PostgresDB`.
pub async fn reconcile(db: Arc<PostgresDB>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = tracing::info_span!(
        "reconcile",
        namespace = db.namespace().unwrap_or_default(),
        name = db.name_any(),
        level = ctx.level.number
    );
    let started = std::time::Instant::now();
    let outcome = tokio::time::timeout(
        RECONCILE_TIMEOUT,
        reconcile_in_span(&db, &ctx).instrument(span),
    )
    .await
    .unwrap_or(Err(Error::ReconcileTimeout {
        limit: RECONCILE_TIMEOUT,
    }));
    if let Some(metrics) = &ctx.metrics {
        metrics.operator.reconciled(
            ctx.level.name,
            started.elapsed().as_secs_f64(),
            outcome.as_ref().err().map(Error::reason),
        );
    }
    outcome
}

/// The `change` label of `pgdb_operator_applied_objects_total`.
pub fn change_label(change: &Change) -> &'static str {
    match change {
        Change::Create => "create",
        Change::Update => "update",
        Change::Repair => "repair",
    }
}

async fn reconcile_in_span(cached: &PostgresDB, ctx: &Context) -> Result<Action, Error> {
    // The watch cache can lag behind this operator's own status write of a
    // moment ago; deciding from it would compare against a status that is
    // no longer there and skip a write that is needed. Read the object itself.
    let api: Api<PostgresDB> =
        Api::namespaced(ctx.client.clone(), &cached.namespace().unwrap_or_default());
    let Some(db) = api
        .get_opt(&cached.name_any())
        .await
        .map_err(|source| Error::Kube {
            action: format!("read PostgresDB {}", cached.name_any()),
            source: Box::new(source),
        })?
    else {
        return Ok(Action::await_change());
    };
    let db = &db;
    if finalizer::is_deleting(db) {
        // Owned children go with the database through garbage collection;
        // volumes stay, because nothing owns them. A level that must act
        // first keeps its finalizer on the database until it has.
        if !finalizer::carries(db) {
            return Ok(Action::await_change());
        }
        return finalize(ctx, db).await;
    }
    // The capabilities act on the effective spec: the spec as written,
    // with the values the level decided itself (Level 5's autopilot) in
    // place. Status and metadata are the object's own.
    let effective = (ctx.level.effective_spec)(db);
    let written = (effective.spec != db.spec).then(|| db.spec.clone());
    let db = &effective;
    let mut observed = observe(&ctx.client, db, &prune::queries(&ctx.level, db)).await?;
    if let Some(spec) = written {
        observed.set_written_spec(spec);
    }
    observed.set_operator_namespace(ctx.operator_namespace.clone());
    if let Some(metrics) = &ctx.metrics {
        let namespace = db.namespace().unwrap_or_default();
        observed.set_reading(metrics.readings.get(&namespace, &db.name_any()));
    }
    let probes = ctx.level.sql_probes(db, &observed);
    if !probes.is_empty() {
        let namespace = db.namespace().unwrap_or_default();
        for (name, answer) in ctx.connector.answer(&namespace, &probes).await {
            if let Some(metrics) = &ctx.metrics {
                metrics.operator.probed(answer.is_ok());
            }
            observed.insert_sql(name, answer);
        }
    }
    // The reconcile's one clock reading: deciding, assessing and the
    // conditions' transition times all see this instant, so a time derived
    // twice (in desire and in assess) cannot differ between the two.
    let now = jiff::Timestamp::now();
    let decision = decide(&ctx.level, db, &observed, now)?;
    let mut report = ApplyReport::default();
    if let Decision::Apply {
        changes,
        deletions,
        sql,
        ..
    } = &decision
    {
        if let Some(change) = finalizer::change(&ctx.level, db) {
            patch_finalizer(ctx, db, change).await?;
        }
        apply_changes(ctx, changes, &mut report).await?;
        delete_objects(ctx, db, deletions, &mut report).await?;
        let namespace = db.namespace().unwrap_or_default();
        for action in sql {
            match ctx.connector.run(&namespace, action).await {
                Ok(()) => {
                    tracing::info!(pod = action.target.pod, reason = action.reason, "ran SQL");
                    report.sql_ran.push(action.reason.clone());
                }
                Err(error) => {
                    // The next reconcile decides again from what the server
                    // then reports; a failed statement is not a failed reconcile.
                    tracing::warn!(pod = action.target.pod, error = %error_chain(&error), "SQL failed");
                    report.sql_failed.push(action.reason.clone());
                }
            }
        }
    }
    let draft = assess(&ctx.level, db, &observed, &decision, &report, now);
    let notes = events_for(db, &decision, &report, &draft);
    let settled = draft.conditions.is_true(READY) && !draft.conditions.is_true(PROGRESSING);
    let wake_at = draft.wake_at;
    let status = next_status(db, draft, Time(now));
    // Events first: they report writes already made, and must not be lost
    // if the status write fails and the next reconcile finds nothing to do.
    publish(ctx, db, &notes).await;
    let status_changed = db.status.as_ref() != Some(&status);
    if status_changed {
        write_status(ctx, db, &status).await?;
    }
    ctx.record_outcome(&object_key(db), false);
    let delay = next_delay(
        &decision,
        status_changed,
        settled,
        !report.sql_failed.is_empty(),
    );
    Ok(Action::requeue(requeue_delay(delay, wake_at, now)))
}

/// The core's own wait before the next reconcile: soon after a status
/// change or while not settled, soon while a refusal rests on what was
/// observed, else the periodic resync (an invalid spec waits for its edit,
/// which triggers a reconcile itself).
pub fn next_delay(
    decision: &Decision,
    status_changed: bool,
    settled: bool,
    sql_failed: bool,
) -> Duration {
    match decision {
        Decision::Apply { .. } if status_changed => AFTER_STATUS_CHANGE,
        Decision::Apply { .. } if !settled || sql_failed => RECHECK,
        Decision::Invalid(problems) if problems.iter().any(|p| p.observed) => RECHECK,
        _ => RESYNC,
    }
}

/// How long to wait before the next reconcile: the core's own `delay`, or
/// less when a capability asked to be woken at an instant before it ends
/// ([`StatusDraft::wake_at`]); an instant already past wakes at once.
pub fn requeue_delay(
    delay: Duration,
    wake_at: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
) -> Duration {
    let Some(at) = wake_at else {
        return delay;
    };
    let until = Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO);
    delay.min(until)
}

/// Writes the objects that differ, recording what was done in `report`.
async fn apply_changes(
    ctx: &Context,
    changes: &[(DesiredObject, Change)],
    report: &mut ApplyReport,
) -> Result<(), Error> {
    let manager = ctx.level.field_manager();
    for (object, change) in changes {
        apply::apply(&ctx.client, &manager, object).await?;
        let reference = object.reference();
        tracing::info!(object = %describe(&reference), ?change, "applied");
        if let Some(metrics) = &ctx.metrics {
            metrics
                .operator
                .applied(&object.resource.kind, change_label(change));
        }
        report_applied(report, object, change, reference);
    }
    Ok(())
}

/// Records in `report` that `object` was applied as `change`: a record
/// ([`DesiredObject::record`]) apart, so writing it is not progress.
fn report_applied(
    report: &mut ApplyReport,
    object: &DesiredObject,
    change: &Change,
    reference: ObjectReference,
) {
    if object.record {
        report.recorded.push(reference);
        return;
    }
    match change {
        Change::Create => report.created.push(reference),
        Change::Update => report.updated.push(reference),
        Change::Repair => report.repaired.push(reference),
    }
}

/// Deletes what the capabilities asked for and the orphans, recording what
/// was deleted in `report`; an object already gone, or replaced since the
/// decision (its uid precondition fails), is skipped.
async fn delete_objects(
    ctx: &Context,
    db: &PostgresDB,
    deletions: &[Deletion],
    report: &mut ApplyReport,
) -> Result<(), Error> {
    let namespace = db.namespace().unwrap_or_default();
    for deletion in deletions {
        let api: Api<DynamicObject> =
            Api::namespaced_with(ctx.client.clone(), &namespace, &deletion.resource);
        match api
            .delete(&deletion.name, &prune::delete_params(deletion))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => continue,
            // A precondition failed: the object was replaced since the
            // decision; the next reconcile decides about the new one.
            Err(kube::Error::Api(status)) if status.code == 409 && deletion.uid.is_some() => {
                continue;
            }
            Err(source) => {
                return Err(Error::Kube {
                    action: format!("delete {} {}", deletion.resource.kind, deletion.name),
                    source: Box::new(source),
                });
            }
        }
        tracing::info!(
            kind = deletion.resource.kind,
            name = deletion.name,
            reason = deletion.reason,
            "deleted"
        );
        let reference = ObjectReference {
            api_version: Some(deletion.resource.api_version.clone()),
            kind: Some(deletion.resource.kind.clone()),
            name: Some(deletion.name.clone()),
            namespace: Some(namespace.clone()),
            uid: deletion.uid.clone(),
            ..Default::default()
        };
        match deletion.origin {
            DeletionOrigin::Capability => report.deleted.push(reference),
            DeletionOrigin::Prune => report.pruned.push(reference),
        }
    }
    Ok(())
}

/// Adds or removes the core's finalizer (see the `finalizer` module).
async fn patch_finalizer(
    ctx: &Context,
    db: &PostgresDB,
    change: finalizer::FinalizerChange,
) -> Result<(), Error> {
    let api: Api<PostgresDB> =
        Api::namespaced(ctx.client.clone(), &db.namespace().unwrap_or_default());
    let body = finalizer::patch(db, change);
    let patch: json_patch::Patch =
        serde_json::from_value(body).map_err(|source| Error::Serialize {
            what: format!("the finalizer patch of {}", db.name_any()),
            source,
        })?;
    api.patch(
        &db.name_any(),
        &PatchParams::default(),
        &Patch::Json::<()>(patch),
    )
    .await
    .map_err(|source| Error::Kube {
        action: format!(
            "{change:?} the finalizer {} on {}",
            finalizer::FINALIZER,
            db.name_any()
        ),
        source: Box::new(source),
    })?;
    tracing::info!(
        ?change,
        finalizer = finalizer::FINALIZER,
        "finalizer patched"
    );
    Ok(())
}

/// The reconcile of a database being deleted that carries the finalizer:
/// runs the capabilities' finalize steps, applies what they ask for, and
/// removes the finalizer once all are done.
async fn finalize(ctx: &Context, db: &PostgresDB) -> Result<Action, Error> {
    let observed = observe(&ctx.client, db, &ctx.level.queries(db)).await?;
    let now = jiff::Timestamp::now();
    let outcome = finalizer::finalize(&ctx.level, db, &observed, now)?;
    let mut report = ApplyReport::default();
    apply_changes(ctx, &outcome.changes, &mut report).await?;
    delete_objects(ctx, db, &outcome.deletions, &mut report).await?;
    let decision = Decision::Apply {
        changes: Vec::new(),
        deletions: Vec::new(),
        sql: Vec::new(),
        notes: outcome.notes.clone(),
    };
    let mut notes = events_for(db, &decision, &report, &StatusDraft::default());
    if outcome.is_done() {
        // Published before the patch: the database may be gone right after.
        notes.push(finalizer::Finalization::finished_note());
        publish(ctx, db, &notes).await;
        patch_finalizer(ctx, db, finalizer::FinalizerChange::Remove).await?;
        ctx.record_outcome(&object_key(db), false);
        return Ok(Action::await_change());
    }
    publish(ctx, db, &notes).await;
    tracing::info!(waiting_for = %outcome.waiting_for(), "finalizing");
    ctx.record_outcome(&object_key(db), false);
    Ok(Action::requeue(RECHECK))
}

async fn write_status(
    ctx: &Context,
    db: &PostgresDB,
    status: &PostgresDBStatus,
) -> Result<(), Error> {
    let api: Api<PostgresDB> =
        Api::namespaced(ctx.client.clone(), &db.namespace().unwrap_or_default());
    let body = json!({
        "apiVersion": PostgresDB::api_version(&()),
        "kind": PostgresDB::kind(&()),
        "status": status,
    });
    api.patch_status(
        &db.name_any(),
        &PatchParams::apply(&ctx.level.field_manager()).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|source| Error::Kube {
        action: format!("write the status of {}", db.name_any()),
        source: Box::new(source),
    })?;
    tracing::info!(phase = ?status.phase, "status updated");
    Ok(())
}

async fn publish(ctx: &Context, db: &PostgresDB, notes: &[Note]) {
    let reference = db.object_ref(&());
    for note in notes {
        let event = Event {
            type_: note.type_,
            reason: note.reason.clone(),
            note: Some(note.message.chars().take(1000).collect()),
            action: if note.related.is_some() {
                "Apply"
            } else {
                "Reconcile"
            }
            .into(),
            secondary: note.related.clone(),
        };
        if let Err(error) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(%error, reason = note.reason, "could not publish an Event");
        }
    }
}

fn object_key(db: &PostgresDB) -> String {
    format!("{}/{}", db.namespace().unwrap_or_default(), db.name_any())
}

/// What to do after a failed reconcile: retry later, backing off.
pub fn error_policy(db: Arc<PostgresDB>, error: &Error, ctx: Arc<Context>) -> Action {
    let failures = ctx.record_outcome(&object_key(&db), true);
    let delay = retry_delay(failures);
    let chain = error_chain(error);
    tracing::warn!(namespace = db.namespace(), name = db.name_any(), failures, retry_in = ?delay, error = %chain, "reconcile failed");
    Action::requeue(delay)
}

/// An error and its sources on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::SqlTarget;

    fn database() -> PostgresDB {
        crate::testing::DbBuilder::named("orders")
            .version("16")
            .build()
    }

    fn reload() -> SqlAction {
        SqlAction {
            target: SqlTarget {
                pod: "orders-0".into(),
                pod_ip: Some("10.0.0.7".into()),
                port: 5432,
                user: "postgres".into(),
                password: "secret".into(),
                database: "postgres".into(),
            },
            statement: "SELECT pg_reload_conf()::text",
            reason: "ParametersReloaded".into(),
            message: "reloaded: work_mem".into(),
            settings: Default::default(),
        }
    }

    fn events(report: &ApplyReport) -> Vec<(EventType, String)> {
        let decision = Decision::Apply {
            changes: vec![],
            deletions: vec![],
            sql: vec![reload()],
            notes: vec![],
        };
        events_for(&database(), &decision, report, &StatusDraft::default())
            .into_iter()
            .map(|n| (n.type_, n.reason))
            .collect()
    }

    #[test]
    fn a_statement_that_ran_is_reported_with_its_own_reason() {
        let ran = ApplyReport {
            sql_ran: vec!["ParametersReloaded".into()],
            ..Default::default()
        };
        assert_eq!(
            events(&ran),
            [(EventType::Normal, "ParametersReloaded".to_string())]
        );
    }

    #[test]
    fn a_statement_that_failed_is_a_warning_and_never_shows_the_password() {
        let failed = ApplyReport {
            sql_failed: vec!["ParametersReloaded".into()],
            ..Default::default()
        };
        assert_eq!(
            events(&failed),
            [(EventType::Warning, "SqlFailed".to_string())]
        );
        let decision = Decision::Apply {
            changes: vec![],
            deletions: vec![],
            sql: vec![reload()],
            notes: vec![],
        };
        let notes = events_for(&database(), &decision, &failed, &StatusDraft::default());
        assert!(notes.iter().all(|n| !n.message.contains("secret")));
    }

    #[test]
    fn a_refusal_resting_on_what_was_observed_is_looked_at_again_soon_and_a_spec_refusal_at_the_resync()
     {
        let spec = SpecProblem::new("spec.version", "InvalidVersion", "no such version");
        let observed = SpecProblem::new(
            "spec.primary",
            "RefusedSwitchoverTargetNotStreaming",
            "it does not stream",
        )
        .from_observation();
        assert_eq!(
            next_delay(&Decision::Invalid(vec![spec.clone()]), true, false, false),
            RESYNC
        );
        assert_eq!(
            next_delay(
                &Decision::Invalid(vec![spec, observed]),
                false,
                false,
                false
            ),
            RECHECK
        );
        assert_eq!(next_delay(&Decision::Paused, true, false, false), RESYNC);
    }

    #[test]
    fn a_capability_s_wake_up_shortens_the_requeue_and_never_lengthens_it() {
        let now = crate::testing::at(1_000);
        assert_eq!(requeue_delay(RESYNC, None, now), RESYNC);
        assert_eq!(
            requeue_delay(RESYNC, Some(crate::testing::at(1_030)), now),
            Duration::from_secs(30)
        );
        assert_eq!(
            requeue_delay(RECHECK, Some(crate::testing::at(1_030)), now),
            RECHECK
        );
        assert_eq!(
            requeue_delay(RESYNC, Some(crate::testing::at(990)), now),
            Duration::ZERO
        );
    }

    #[test]
    fn applied_objects_are_counted_by_the_change_words_of_the_metric() {
        let labels: Vec<_> = [Change::Create, Change::Update, Change::Repair]
            .iter()
            .map(change_label)
            .collect();
        assert_eq!(labels, ["create", "update", "repair"]);
    }

    #[test]
    fn writing_a_record_is_neither_progress_nor_an_event() {
        let mut desired = crate::capability::Desired::default();
        let baseline = k8s_openapi::api::core::v1::ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some("orders-baseline".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        desired.add_record(&baseline).expect("serialises");
        let object = &desired.objects()[0];
        let mut report = ApplyReport::default();
        for change in [Change::Create, Change::Update, Change::Repair] {
            report_applied(&mut report, object, &change, object.reference());
        }
        assert_eq!(report.recorded.len(), 3);
        assert!(!report.wrote_anything());
        assert!(events(&report).is_empty());
        let level = Level {
            number: 5,
            name: "level5-autopilot",
            capabilities: vec![],
            companions: vec![],
            insights: None,
            effective_spec: crate::capability::as_written,
        };
        let decision = Decision::Apply {
            changes: vec![],
            deletions: vec![],
            sql: vec![],
            notes: vec![],
        };
        let draft = assess(
            &level,
            &database(),
            &Observed::default(),
            &decision,
            &report,
            crate::testing::at(0),
        );
        assert!(!draft.conditions.is_true(PROGRESSING));
    }

    #[test]
    fn the_capabilities_assess_a_refused_reconcile_knowing_it_was_refused() {
        let level = Level {
            number: 3,
            name: "level3-lifecycle",
            capabilities: vec![],
            companions: vec![],
            insights: None,
            effective_spec: crate::capability::as_written,
        };
        let assessed = |decision: &Decision| {
            assess(
                &level,
                &database(),
                &Observed::default(),
                decision,
                &ApplyReport::default(),
                crate::testing::at(0),
            )
        };
        let refused = Decision::Invalid(vec![SpecProblem::new(
            "spec.restore",
            "RefusedRestoreIntoExistingData",
            "it holds data",
        )]);
        assert!(assessed(&refused).refused);
        let applied = Decision::Apply {
            changes: vec![],
            deletions: vec![],
            sql: vec![],
            notes: vec![],
        };
        assert!(!assessed(&applied).refused);
    }

    #[test]
    fn a_statement_not_run_publishes_nothing() {
        assert!(events(&ApplyReport::default()).is_empty());
    }
}
