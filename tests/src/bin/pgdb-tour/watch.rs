//! The live view: a line whenever an object appears, changes or goes,
//! and one for each Event.

use std::collections::HashMap;
use std::fmt::Debug;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::Api;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use shared::api::PostgresDB;

pub fn now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    format!(
        "{:02}:{:02}:{:02}",
        (now / 3600) % 24,
        (now / 60) % 60,
        now % 60
    )
}

/// Prints a line whenever an object of kind `K` appears, disappears, or
/// its one-line summary changes.
pub async fn show<K>(client: Client, summarize: fn(&K) -> String)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + 'static,
{
    let api: Api<K> = Api::all(client);
    let mut last: HashMap<String, String> = HashMap::new();
    let mut events = watcher(api, watcher::Config::default()).boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                let name = format!("{}/{}", K::kind(&()), object.name_any());
                let summary = summarize(&object);
                let previous = last.insert(name.clone(), summary.clone());
                match previous {
                    None => println!("{} + {name}  {summary}", now()),
                    Some(previous) if previous != summary => {
                        println!("{} ~ {name}  {summary}", now())
                    }
                    Some(_) => {}
                }
            }
            Ok(watcher::Event::Delete(object)) => {
                let name = format!("{}/{}", K::kind(&()), object.name_any());
                last.remove(&name);
                println!("{} - {name}  deleted", now());
            }
            Ok(_) => {}
            Err(error) => println!("{} ! watching {} failed: {error}", now(), K::plural(&())),
        }
    }
}

pub async fn show_events(client: Client) {
    let api: Api<Event> = Api::all(client);
    // The recorder counts repeats of an Event in its series; print each
    // Event once, and again only when it repeats.
    let mut seen: HashMap<String, i32> = HashMap::new();
    let mut events = watcher(api, watcher::Config::default()).boxed();
    while let Some(event) = events.next().await {
        if let Ok(watcher::Event::Apply(e) | watcher::Event::InitApply(e)) = event {
            let count = e.series.as_ref().map(|s| s.count).unwrap_or(1);
            if seen.insert(e.name_any(), count) == Some(count) {
                continue;
            }
            let repeats = if count > 1 {
                format!(" (x{count})")
            } else {
                String::new()
            };
            let about = e.regarding.as_ref().map(|r| {
                format!(
                    "{}/{}",
                    r.kind.clone().unwrap_or_default(),
                    r.name.clone().unwrap_or_default()
                )
            });
            println!(
                "{} * Event {} {} on {}: {}{repeats}",
                now(),
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                about.unwrap_or_default(),
                e.note.unwrap_or_default()
            );
        }
    }
}

pub fn summarize_db(db: &PostgresDB) -> String {
    let Some(status) = &db.status else {
        return format!("version {} (no status yet)", db.spec.version);
    };
    let conditions: Vec<String> = status
        .conditions
        .iter()
        .map(|c| format!("{}={} ({})", c.type_, c.status, c.reason))
        .collect();
    let restore = status.restore.as_ref().map_or(String::new(), |r| {
        format!(
            ", restore of {} {:?}{}",
            r.backup,
            r.phase,
            r.message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        )
    });
    let insights = status
        .insights
        .as_ref()
        .map_or(String::new(), summarize_insights);
    let primary = summarize_primary(status);
    format!(
        "phase {}, version {} running {}, {}{restore}{insights}{primary}",
        status.phase.map(|p| format!("{p:?}")).unwrap_or_default(),
        db.spec.version,
        status.current_version.as_deref().unwrap_or("nothing yet"),
        conditions.join(", ")
    )
}

/// The primary and the promotion in progress or last (Level 5), as
/// `kubectl get pgdb` and `status.highAvailability` show them.
fn summarize_primary(status: &shared::api::PostgresDBStatus) -> String {
    let Some(primary) = &status.current_primary else {
        return String::new();
    };
    let mut text = format!(", primary {primary}");
    if let Some(ha) = &status.high_availability {
        text += &format!(" of {} instances", ha.instances);
        if let Some(p) = &ha.promotion {
            text += &format!(
                ", {:?} {} -> {} {:?} ({})",
                p.kind, p.from, p.to, p.phase, p.reason
            );
        }
    }
    text
}

/// `status.insights` (Level 4), as `kubectl get pgdb -o wide` shows it.
fn summarize_insights(insights: &shared::api::InsightsStatus) -> String {
    let known = |v: Option<i64>| v.map_or("?".to_string(), |v| v.to_string());
    let mut text = format!(
        ", insights: {} of {} connections",
        known(insights.connections),
        known(insights.max_connections)
    );
    if let Some(percent) = insights.storage_used_percent {
        text += &format!(
            ", storage {percent}% of {}",
            insights.storage_capacity.as_deref().unwrap_or("?")
        );
    }
    if let Some(time) = &insights.last_backup_time {
        text += &format!(", last backup {}", time.0);
    }
    text
}

pub fn summarize_service(service: &Service) -> String {
    let spec = service.spec.clone().unwrap_or_default();
    // Level 5 selects by role, and fences the read-write Service.
    let role = spec
        .selector
        .as_ref()
        .and_then(|s| s.get(shared::keys::ROLE_LABEL))
        .map(|role| format!(", selects role {role}"))
        .unwrap_or_default();
    let fenced = spec
        .selector
        .as_ref()
        .is_some_and(|s| s.contains_key(shared::keys::FENCE_LABEL));
    format!(
        "clusterIP {}{role}{}",
        spec.cluster_ip.unwrap_or_default(),
        if fenced {
            ", fenced (selects no pod)"
        } else {
            ""
        }
    )
}

pub fn summarize_statefulset(sts: &StatefulSet) -> String {
    let ready = sts
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let image = sts
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref()?.containers.first()?.image.clone())
        .unwrap_or_default();
    format!("ready {ready}/{replicas}, image {image}")
}

pub fn summarize_claim(claim: &PersistentVolumeClaim) -> String {
    let status = claim.status.clone().unwrap_or_default();
    let capacity = status
        .capacity
        .and_then(|c| c.get("storage").map(|q| q.0.clone()))
        .unwrap_or_default();
    format!("{} {capacity}", status.phase.unwrap_or_default())
}

pub fn summarize_pod(pod: &Pod) -> String {
    let status = pod.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let restarts: i32 = status
        .container_statuses
        .iter()
        .flatten()
        .map(|c| c.restart_count)
        .sum();
    let waiting: Vec<String> = status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
        .collect();
    let role = pod
        .labels()
        .get(shared::keys::ROLE_LABEL)
        .map(|role| format!(", role {role}"))
        .unwrap_or_default();
    format!(
        "{}{}, ready {ready}{role}, restarts {restarts}{}",
        status.phase.unwrap_or_default(),
        status
            .pod_ip
            .map(|ip| format!(" at {ip}"))
            .unwrap_or_default(),
        if waiting.is_empty() {
            String::new()
        } else {
            format!(", waiting: {}", waiting.join(", "))
        }
    )
}

/// A backup's phase, size and what it holds (Level 3), or its error.
pub fn summarize_backup(backup: &shared::backup::PostgresDBBackup) -> String {
    let status = backup.status.clone().unwrap_or_default();
    let phase = status
        .phase
        .map_or("(no phase yet)".to_string(), |p| format!("{p:?}"));
    let mut text = format!("of {}: {phase}", backup.spec.database);
    if let Some(size) = status.size {
        text.push_str(&format!(", {size}"));
    }
    if let Some(summary) = status.summary {
        text.push_str(&format!(
            ", {} databases, {} tables, {} rows",
            summary.databases, summary.tables, summary.rows
        ));
    }
    if let Some(error) = status.error {
        text.push_str(&format!(": {error}"));
    }
    text
}
