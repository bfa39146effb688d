//! What the high-availability scenarios watch while they break a database:
//! a client writing rows continuously through the read-write Service and
//! recording each commit the server acknowledged, what each instance's
//! server says it is (a writable primary, a replica in recovery, or
//! silent), and how many pods the read-write Service's Endpoints list.
//!
//! They speak to the servers directly, at the Service's and the pods'
//! addresses, which this machine routes to on the sandbox only; on another
//! cluster the scenarios say they did not run.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::ResourceExt;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::steps::{NAME, children};
use crate::connect::{Role, login};
use crate::harness::{Failed, OrFail, TestCluster};

/// How long one write or one question to a server may take: a frozen or
/// fenced server is one that does not answer within it.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// What a server said it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerRole {
    /// It accepts writes (`pg_is_in_recovery()` is false).
    Primary,
    /// It replays WAL as a hot standby.
    Replica,
    /// It did not answer.
    Silent,
}

/// What the writer has recorded so far.
#[derive(Debug, Default)]
struct Log {
    /// The ids whose insert the server acknowledged, with when.
    acknowledged: Vec<(i64, Instant)>,
    /// Why the last failed attempt failed.
    last_error: Option<String>,
}

/// A client inserting rows `1, 2, ...` into `ticks` through the read-write
/// Service, one autocommit insert at a time, reconnecting after any
/// failure; an id whose insert failed or timed out is never used again
/// (it may or may not have committed; it was not acknowledged).
pub struct Writer {
    log: Arc<Mutex<Log>>,
    task: JoinHandle<()>,
}

impl Writer {
    /// Creates `ticks` and starts writing; fails when the database does not
    /// take the table.
    pub async fn start(cluster: &TestCluster) -> Result<Self, Failed> {
        let config = service_login(cluster).await?;
        let client = connect(&config)
            .await
            .ok_or_else(|| Failed::new("cannot connect through the read-write Service"))?;
        client
            .batch_execute("CREATE TABLE ticks (id bigint PRIMARY KEY)")
            .await
            .or_fail("create the table ticks")?;
        let log = Arc::new(Mutex::new(Log::default()));
        let task = tokio::spawn(write_forever(config, Some(client), log.clone()));
        Ok(Self { log, task })
    }

    /// How many inserts were acknowledged.
    pub fn acknowledged(&self) -> usize {
        self.lock().acknowledged.len()
    }

    /// Why the writer's last failed attempt failed, if one did.
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    /// The longest time without an acknowledged insert from `since` to the
    /// last acknowledgement: how long the writes stopped.
    pub fn longest_pause_since(&self, since: Instant) -> Duration {
        let log = self.lock();
        longest_pause(log.acknowledged.iter().map(|(_, at)| *at), since)
    }

    /// When the first insert acknowledged after `since` was.
    pub fn first_after(&self, since: Instant) -> Option<Instant> {
        self.lock()
            .acknowledged
            .iter()
            .map(|(_, at)| *at)
            .find(|at| *at > since)
    }

    /// Stops writing; the ids acknowledged.
    pub async fn stop(self) -> Vec<i64> {
        self.task.abort();
        let _ = self.task.await;
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.acknowledged.iter().map(|(id, _)| *id).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The longest time between `since` and the first of `acknowledged` after
/// it, or between two consecutive ones after it.
fn longest_pause(acknowledged: impl Iterator<Item = Instant>, since: Instant) -> Duration {
    let mut previous = since;
    let mut longest = Duration::ZERO;
    for at in acknowledged.filter(|at| *at > since) {
        longest = longest.max(at - previous);
        previous = at;
    }
    longest
}

async fn write_forever(
    config: tokio_postgres::Config,
    mut client: Option<tokio_postgres::Client>,
    log: Arc<Mutex<Log>>,
) {
    let mut next = 1_i64;
    let failed = |why: String| log.lock().unwrap_or_else(|e| e.into_inner()).last_error = Some(why);
    loop {
        let Some(session) = client.as_ref() else {
            match connect_or_say(&config).await {
                Ok(session) => client = Some(session),
                Err(why) => {
                    failed(format!("connect: {why}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            continue;
        };
        let id = next;
        next += 1;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
        let insert = session.execute("INSERT INTO ticks VALUES ($1)", &params);
        match tokio::time::timeout(ANSWER_WITHIN, insert).await {
            Ok(Ok(_)) => log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .acknowledged
                .push((id, Instant::now())),
            Ok(Err(error)) => {
                failed(format!("insert {id}: {error}"));
                client = None;
            }
            Err(_) => {
                failed(format!("insert {id}: no answer within {ANSWER_WITHIN:?}"));
                client = None;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The owner's login at the read-write Service's address (the sandbox's
/// Service addresses are loopback addresses of this machine).
async fn service_login(cluster: &TestCluster) -> Result<tokio_postgres::Config, Failed> {
    let service = cluster
        .api::<Service>()
        .get(NAME)
        .await
        .or_fail(format!("read Service {NAME}"))?;
    let address = service
        .spec
        .and_then(|s| s.cluster_ip)
        .ok_or_else(|| Failed::new(format!("Service {NAME} has no address")))?;
    let mut config = login(cluster, Role::Owner, NAME, None)
        .await
        .ok_or_else(|| Failed::new("the owner's Secret is missing"))?;
    config.host(&address).connect_timeout(ANSWER_WITHIN);
    Ok(config)
}

async fn connect(config: &tokio_postgres::Config) -> Option<tokio_postgres::Client> {
    connect_or_say(config).await.ok()
}

/// A session, or why there is none.
async fn connect_or_say(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client, String> {
    let attempt = tokio::time::timeout(ANSWER_WITHIN, config.connect(tokio_postgres::NoTls));
    let (client, connection) = attempt
        .await
        .map_err(|_| format!("no answer within {ANSWER_WITHIN:?}"))?
        .map_err(|e| shared::reconcile::error_chain(&e))?;
    tokio::spawn(connection);
    Ok(client)
}

/// The ids of `ticks` the database holds now, read through the read-write
/// Service as the owner (retried within the cluster's budget: the Service
/// may be fenced for a moment).
pub async fn rows_held(cluster: &TestCluster) -> Result<Vec<i64>, Failed> {
    let config = service_login(cluster).await?;
    cluster
        .eventually(
            cluster.budget(),
            "the read-write Service answers a count of ticks",
            || async {
                let Some(client) = connect(&config).await else {
                    return Ok(None);
                };
                let read = client.query("SELECT id FROM ticks", &[]);
                Ok(match tokio::time::timeout(ANSWER_WITHIN, read).await {
                    Ok(Ok(rows)) => Some(rows.iter().map(|r| r.get::<_, i64>(0)).collect()),
                    _ => None,
                })
            },
        )
        .await
}

/// What each of the database's pods' servers says it is, by pod name, in
/// name order; `ticks` holds the rows counted there (`None`: no answer or
/// no table yet).
pub async fn server_roles(
    cluster: &TestCluster,
) -> Result<Vec<(String, ServerRole, Option<i64>)>, Failed> {
    // The application database, where `ticks` is.
    let owner = login(cluster, Role::Owner, NAME, None)
        .await
        .ok_or_else(|| Failed::new("the owner's Secret is missing"))?;
    let mut config = login(cluster, Role::Superuser, NAME, owner.get_dbname())
        .await
        .ok_or_else(|| Failed::new("the superuser's Secret is missing"))?;
    config.connect_timeout(ANSWER_WITHIN);
    let mut pods = children::<Pod>(cluster).await?;
    pods.sort_by_key(|p| p.name_any());
    let mut roles = Vec::new();
    for pod in pods {
        let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
        let (role, rows) = match ip {
            Some(ip) => {
                let mut at_pod = config.clone();
                at_pod.host(&ip);
                ask(&at_pod).await
            }
            None => (ServerRole::Silent, None),
        };
        roles.push((pod.name_any(), role, rows));
    }
    Ok(roles)
}

async fn ask(config: &tokio_postgres::Config) -> (ServerRole, Option<i64>) {
    let Some(client) = connect(config).await else {
        return (ServerRole::Silent, None);
    };
    let question = client.query_one("SELECT pg_is_in_recovery()", &[]);
    let role = match tokio::time::timeout(ANSWER_WITHIN, question).await {
        Ok(Ok(row)) if row.get::<_, bool>(0) => ServerRole::Replica,
        Ok(Ok(_)) => ServerRole::Primary,
        _ => return (ServerRole::Silent, None),
    };
    let count = client.query_one("SELECT count(*) FROM ticks", &[]);
    let rows = match tokio::time::timeout(ANSWER_WITHIN, count).await {
        Ok(Ok(row)) => Some(row.get::<_, i64>(0)),
        _ => None,
    };
    (role, rows)
}

/// How many pods the read-write Service's Endpoints list as ready now.
pub async fn selected_pods(cluster: &TestCluster) -> Result<usize, Failed> {
    let endpoints = cluster
        .api::<Endpoints>()
        .get_opt(NAME)
        .await
        .or_fail(format!("read Endpoints {NAME}"))?;
    Ok(endpoints
        .and_then(|e| e.subsets)
        .unwrap_or_default()
        .iter()
        .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
        .sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_is_the_longest_wait_for_an_acknowledgement_after_the_event() {
        let event = Instant::now();
        let at = |ms: u64| event + Duration::from_millis(ms);
        // One write acknowledged before the event does not count; the
        // server stopped for 1.5 s between 100 ms and 1600 ms.
        let acknowledged = [
            event - Duration::from_millis(50),
            at(100),
            at(1600),
            at(1650),
        ];
        assert_eq!(
            longest_pause(acknowledged.into_iter(), event),
            Duration::from_millis(1500)
        );
        assert_eq!(
            longest_pause([at(300)].into_iter(), event),
            Duration::from_millis(300)
        );
        assert_eq!(longest_pause(std::iter::empty(), event), Duration::ZERO);
    }
}
