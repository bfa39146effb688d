//! Port-forwarding to a real server with kube-rs's `Api::portforward`:
//! PostgreSQL answers through the stream, and a port nobody listens on
//! reports the kubelet's "connection refused" on its error channel.

use std::time::Duration;

use super::{create, pod_ip, pods, postgres_pod, ready, start, wait_pod};

#[tokio::test]
async fn a_postgres_pod_port_forwarded_with_kube_rs_answers_select_1() {
    let sb = start().await;
    create(&sb, postgres_pod("db", None)).await;
    wait_pod(&sb, "db", "Ready", ready).await;
    let mut pf = pods(&sb)
        .portforward("db", &[5432])
        .await
        .expect("the connection is upgraded");
    let stream = pf.take_stream(5432).expect("a stream for port 5432");
    let (client, connection) = tokio_postgres::Config::new()
        .user("postgres")
        .password("pw")
        .dbname("shop")
        .connect_raw(stream, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL answers through the forward");
    let connection = tokio::spawn(connection);
    let row = client
        .query_one("SELECT 1", &[])
        .await
        .expect("the query runs");
    assert_eq!(row.get::<_, i32>(0), 1);
    let db: String = client
        .query_one("SELECT current_database()", &[])
        .await
        .expect("the query runs")
        .get(0);
    assert_eq!(db, "shop");
    drop(client);
    let _ = connection.await;
    tokio::time::timeout(Duration::from_secs(10), pf.join())
        .await
        .expect("the forward ends once the client is done")
        .expect("the forward ends cleanly");
    sb.shutdown().await;
}

#[tokio::test]
async fn port_forwarding_to_a_port_nobody_listens_on_reports_connection_refused() {
    let sb = start().await;
    create(&sb, postgres_pod("db", None)).await;
    let pod = wait_pod(&sb, "db", "Ready", ready).await;
    let mut pf = pods(&sb)
        .portforward("db", &[5433, 5432])
        .await
        .expect("the connection is upgraded");
    let error = pf
        .take_error(5433)
        .expect("an error channel for 5433")
        .await
        .expect("an error message");
    assert!(
        error.starts_with("error forwarding port 5433 to pod "),
        "{error}"
    );
    assert!(
        error.contains(&format!(
            "dial tcp4 {}:5433: connect: connection refused",
            pod_ip(&pod)
        )),
        "{error}"
    );
    // The other port works on the same connection.
    let stream = pf.take_stream(5432).expect("a stream for port 5432");
    let (client, connection) = tokio_postgres::Config::new()
        .user("postgres")
        .password("pw")
        .dbname("shop")
        .connect_raw(stream, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL answers through the forward");
    tokio::spawn(connection);
    let one: i32 = client
        .query_one("SELECT 1", &[])
        .await
        .expect("the query runs")
        .get(0);
    assert_eq!(one, 1);
    sb.shutdown().await;
}
