//! A client that writes to the database's pod directly, past its Service,
//! during a major upgrade.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use shared::api::UpgradePhase;

/// A client that connects to pod `orders-0` itself, past the Service, and
/// inserts a numbered row into `ticks` every 20 ms as the owner,
/// reconnecting when its session ends (to whatever pod then has that name).
/// It records the inserts the server acknowledged, and why others failed.
pub(super) struct DirectWriter {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<i64>>>,
    failures: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl DirectWriter {
    pub(super) fn start(pods: Api<Pod>, login: tokio_postgres::Config) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(Vec::<String>::new()));
        let (done, acks, failed) = (stop.clone(), acknowledged.clone(), failures.clone());
        let note = move |failure: String| {
            let mut failed = failed.lock().expect("not poisoned");
            if !failed.contains(&failure) {
                failed.push(failure);
            }
        };
        let task = tokio::spawn(async move {
            let mut client: Option<tokio_postgres::Client> = None;
            let mut n: i64 = 0;
            while !done.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let Some(session) = client.as_ref().filter(|c| !c.is_closed()) else {
                    let ip = pods
                        .get_opt("orders-0")
                        .await
                        .ok()
                        .flatten()
                        .and_then(|p| p.status?.pod_ip);
                    let Some(ip) = ip else { continue };
                    let mut config = login.clone();
                    config.host(&ip).connect_timeout(Duration::from_secs(1));
                    match config.connect(tokio_postgres::NoTls).await {
                        Ok((session, connection)) => {
                            tokio::spawn(connection);
                            client = Some(session);
                        }
                        Err(error) => note(format!("connect: {error}")),
                    }
                    continue;
                };
                n += 1;
                match session
                    .execute("INSERT INTO ticks VALUES ($1)", &[&n])
                    .await
                {
                    Ok(_) => acks.lock().expect("not poisoned").push(n),
                    Err(error) => note(format!(
                        "insert: {}",
                        error
                            .as_db_error()
                            .map_or(error.to_string(), |e| e.message().to_string())
                    )),
                }
            }
        });
        Self {
            stop,
            acknowledged,
            failures,
            task,
        }
    }

    pub(super) fn acknowledged(&self) -> usize {
        self.acknowledged.lock().expect("not poisoned").len()
    }

    /// Stops writing: the acknowledged inserts and the distinct failures.
    pub(super) async fn stop(self) -> (Vec<i64>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        let acknowledged = self.acknowledged.lock().expect("not poisoned").clone();
        let failures = self.failures.lock().expect("not poisoned").clone();
        (acknowledged, failures)
    }
}

impl super::fixture::Cluster {
    /// Asks for the major upgrade 15 to 16 while a [`DirectWriter`]
    /// logged in as `login` writes to the pod, and waits until the upgrade
    /// completes or rolls back: the inserts acknowledged and the distinct
    /// failures the writer saw.
    pub(super) async fn upgrade_under_a_direct_writer(
        &self,
        login: tokio_postgres::Config,
    ) -> (Vec<i64>, Vec<String>) {
        let writer = DirectWriter::start(self.api::<Pod>(), login);
        self.wait_until("the direct writer's inserts are acknowledged", || async {
            writer.acknowledged() >= 10
        })
        .await;
        self.inner
            .patch_spec(
                "orders",
                serde_json::json!({"version": "16", "upgrade": {"allowMajor": true}}),
            )
            .await
            .expect("the spec is patched");
        self.wait_until("the upgrade completes or rolls back", || async {
            matches!(
                self.upgrade_phase().await,
                Some(UpgradePhase::Complete | UpgradePhase::RolledBack)
            )
        })
        .await;
        let (acknowledged, failures) = writer.stop().await;
        eprintln!(
            "{} inserts acknowledged; failures: {failures:#?}",
            acknowledged.len()
        );
        (acknowledged, failures)
    }
}

/// The inserts the writer saw acknowledged that the server `owner` is
/// connected to does not hold.
pub(super) async fn lost_inserts(owner: &tokio_postgres::Client, acknowledged: &[i64]) -> Vec<i64> {
    let stored: std::collections::BTreeSet<i64> = owner
        .query("SELECT n FROM ticks", &[])
        .await
        .expect("the ticks table is readable")
        .iter()
        .map(|row| row.get(0))
        .collect();
    acknowledged
        .iter()
        .filter(|n| !stored.contains(n))
        .copied()
        .collect()
}
