//! Image pulls on the real runtime: a `postgres:<major>[.<minor>]` image
//! runs the binaries of that version, and one whose version is not
//! installed fails as an image pull does (ErrImagePull, then
//! ImagePullBackOff).

use sandbox::PostgresConfig;
use serde_json::json;

use super::{
    create, pod, pod_ip, pods, postgres_pod, query, ready, start, wait_pod, waiting_message,
    waiting_reason,
};

#[tokio::test]
async fn a_postgres_image_whose_major_is_not_installed_fails_like_an_image_pull() {
    let sb = start().await;
    create(&sb, pod("old", "postgres", "postgres:9.6")).await;
    let failed = wait_pod(&sb, "old", "ErrImagePull", |p| {
        waiting_reason(p).as_deref() == Some("ErrImagePull")
    })
    .await;
    let message = waiting_message(&failed);
    assert!(
        message.contains("PostgreSQL 9.6 server binaries not found"),
        "{message}"
    );
    wait_pod(&sb, "old", "ImagePullBackOff", |p| {
        waiting_reason(p).as_deref() == Some("ImagePullBackOff")
    })
    .await;
    let old = pods(&sb).get("old").await.expect("exists");
    assert_eq!(old.status.and_then(|s| s.phase).as_deref(), Some("Pending"));
    sb.shutdown().await;
}

#[tokio::test]
async fn a_postgres_image_whose_minor_is_not_installed_fails_like_an_image_pull_and_runs_no_other()
{
    let sb = start().await;
    // 16.3 is never installed by scripts/install-postgres.sh (16, 16.2, 16.4).
    let mut odd = postgres_pod("odd", None);
    odd["spec"]["containers"][0]["image"] = json!("postgres:16.3");
    create(&sb, odd).await;
    let failed = wait_pod(&sb, "odd", "ErrImagePull", |p| {
        waiting_reason(p).as_deref() == Some("ErrImagePull")
    })
    .await;
    let message = waiting_message(&failed);
    assert!(
        message.contains("PostgreSQL 16.3 server binaries not found")
            && message.contains("install-postgres.sh 16.3"),
        "{message}"
    );
    let odd = pods(&sb).get("odd").await.expect("exists");
    assert_eq!(odd.status.and_then(|s| s.phase).as_deref(), Some("Pending"));
    sb.shutdown().await;
}

#[tokio::test]
async fn a_postgres_17_pod_runs_the_binaries_of_major_17() {
    let sb = start().await;
    if let Err(missing) = PostgresConfig::default().binaries.server(17) {
        panic!("{missing}");
    }
    let mut new = postgres_pod("new", None);
    new["spec"]["containers"][0]["image"] = json!("postgres:17");
    create(&sb, new).await;
    wait_pod(&sb, "new", "Ready", ready).await;
    let log = pods(&sb)
        .logs("new", &Default::default())
        .await
        .expect("the log is served");
    assert!(log.contains("starting PostgreSQL 17."), "{log}");
    sb.shutdown().await;
}

/// Whether exactly PostgreSQL `16.<minor>` is installed (not just a 16).
fn exact_minor_installed(minor: u32) -> bool {
    PostgresConfig::default()
        .binaries
        .server_for(16, Some(minor))
        .is_ok_and(|bin| bin.ends_with(format!("16.{minor}/bin")))
}

#[tokio::test]
async fn postgres_16_2_and_16_4_pods_run_exactly_their_minor() {
    let sb = start().await;
    assert!(
        exact_minor_installed(2) && exact_minor_installed(4),
        "PostgreSQL 16.2 and 16.4 are not both installed: install them with scripts/install-postgres.sh 16.2 16.4"
    );
    for (name, image) in [("old", "postgres:16.2"), ("new", "postgres:16.4")] {
        let mut minor = postgres_pod(name, None);
        minor["spec"]["containers"][0]["image"] = json!(image);
        create(&sb, minor).await;
    }
    for (name, version) in [("old", "16.2"), ("new", "16.4")] {
        let pod = wait_pod(&sb, name, "Ready", ready).await;
        assert_eq!(query(&pod_ip(&pod), "show server_version").await, version);
    }
    sb.shutdown().await;
}
