//! The runtime's fault controls on a real server: pausing its processes,
//! wiping its volume's data and filling its volume, each behaving as the
//! fault would on a node.

use sandbox::KillKind;
use sandbox::pgruntime::VolumeFull;

use super::{
    claim, create, pod_ip, pods, postgres_pod, psql, query, ready, restarts, start, wait_pod,
    wait_until,
};

/// The state letter of a process (`T` when stopped), from /proc.
fn process_state(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s.rsplit_once(')')?.1.split_whitespace().next()?.to_string()))
        .unwrap_or_else(|| "gone".into())
}

#[tokio::test]
async fn a_paused_server_becomes_unready_and_is_ready_again_once_resumed() {
    let sb = start().await;
    create(&sb, postgres_pod("db", None)).await;
    let pod = wait_pod(&sb, "db", "Ready", ready).await;
    let ip = pod_ip(&pod);
    let rt = sb.postgres_runtime().expect("the real runtime");
    let leader = rt.pids("default", "db")[0];

    assert!(rt.pause("default", "db", None, true));
    // The whole container is stopped, as a frozen cgroup: the postmaster
    // and every child it forked (they run in sessions of their own).
    let tree = sandbox::pgruntime::process::tree(leader);
    assert!(tree.len() > 1, "the server has children: {tree:?}");
    let states = || {
        tree.iter()
            .map(|&p| format!("{p}:{}", process_state(p)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    wait_until(
        "every process of the container is stopped",
        || tree.iter().all(|&p| process_state(p) == "T"),
        states,
    )
    .await;
    // pg_isready connects (the kernel accepts) but gets no answer in time.
    wait_pod(&sb, "db", "unready while paused", |p| !ready(p)).await;
    let pod = pods(&sb).get("db").await.expect("exists");
    assert_eq!(restarts(&pod), 0, "a paused container is not restarted");

    assert!(rt.pause("default", "db", None, false));
    wait_pod(&sb, "db", "ready again once resumed", ready).await;
    assert!(
        tree.iter().all(|&p| process_state(p) != "T"),
        "every process runs again: {}",
        states()
    );
    assert_eq!(query(&ip, "select 1").await, "1");
    assert_eq!(restarts(&pods(&sb).get("db").await.expect("exists")), 0);
    sb.shutdown().await;
}

#[tokio::test]
async fn a_postgres_pod_whose_volume_data_is_deleted_starts_over_with_a_fresh_initdb() {
    let sb = start().await;
    create(&sb, claim("data")).await;
    create(&sb, postgres_pod("db", Some("data"))).await;
    let pod = wait_pod(&sb, "db", "Ready", ready).await;
    let ip = pod_ip(&pod);
    query(
        &ip,
        "create table orders (id int); insert into orders values (1), (2)",
    )
    .await;
    assert_eq!(query(&ip, "select count(*) from orders").await, "2");

    let rt = sb.postgres_runtime().expect("the real runtime");
    rt.delete_volume_data("default", "data")
        .expect("the data is deleted");
    let dir = rt.volume_path("default", "data").expect("a bound claim");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .expect("the volume's directory stays")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "the volume is empty: {left:?}");
    // The server is not told: it keeps running until it is restarted, but
    // a new connection needs files that are gone.
    assert_eq!(restarts(&pods(&sb).get("db").await.expect("exists")), 0);
    let out = psql(&ip, "select 1").await;
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && error.contains("No such file or directory"),
        "a connection to the wiped server fails for want of its files: {error}"
    );

    assert!(rt.kill_container("default", "db", None, KillKind::Crash));
    wait_pod(&sb, "db", "restarted and Ready", |p| {
        restarts(p) == 1 && ready(p)
    })
    .await;
    let log = pods(&sb)
        .logs("db", &Default::default())
        .await
        .expect("the log is served");
    assert!(
        log.contains("PostgreSQL init process complete"),
        "the restarted container ran initdb:\n{log}"
    );
    // A fresh cluster: the entrypoint made database `shop` again, the
    // table and its rows are gone.
    assert_eq!(
        query(&ip, "select to_regclass('orders') is null").await,
        "t"
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn a_full_volume_makes_writes_fail_until_it_has_room_again() {
    let sb = start().await;
    create(&sb, claim("data")).await;
    create(&sb, postgres_pod("db", Some("data"))).await;
    let pod = wait_pod(&sb, "db", "Ready", ready).await;
    let ip = pod_ip(&pod);
    query(
        &ip,
        "create table items (id int); insert into items values (1)",
    )
    .await;
    let rt = sb.postgres_runtime().expect("the real runtime");

    let how = rt
        .fill_volume("default", "data", true)
        .expect("the volume fills");
    let insert = "insert into items select generate_series(2, 20000)";
    let out = psql(&ip, insert).await;
    let error = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the insert fails on a full volume");
    match how {
        // As root (as here and on CI): a real full disk. Reading needs no
        // room, and a failed write is an error, not a crash.
        VolumeFull::NoSpace => {
            assert!(error.contains("No space left on device"), "{error}");
            assert_eq!(query(&ip, "select count(*) from items").await, "1");
        }
        // As a normal user: files cannot be opened for writing, and
        // PostgreSQL opens relation files read-write, so a new connection
        // may already fail; either way with EACCES.
        VolumeFull::NoWritePermission => {
            assert!(error.contains("Permission denied"), "{error}");
        }
    }

    rt.fill_volume("default", "data", false)
        .expect("the volume has room again");
    query(&ip, insert).await;
    assert_eq!(query(&ip, "select count(*) from items").await, "20000");
    let pod = pods(&sb).get("db").await.expect("exists");
    assert!(ready(&pod));
    assert_eq!(restarts(&pod), 0);
    sb.shutdown().await;
}
