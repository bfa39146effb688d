//! The options docs/level1-install.md documents for a level's binary, run
//! as a learner runs it: `--namespace NS` watches one namespace;
//! `--log-format json` logs JSON lines; `--health-addr` serves `/healthz`
//! and `/readyz`, and with `--leader-elect` a replica standing by for the
//! Lease is ready too (a Deployment's rollout needs it to be).

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use shared::api::PostgresDB;
use tests::builders::DbBuilder;
use tests::harness::{Failed, Operator, OrFail, TestCluster, ensure};
use tests::levels::LevelId;
use tests::scenarios::is_settled;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A local address no one listens on now.
fn free_address() -> Result<String, Failed> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").or_fail("bind a free port")?;
    let address = listener.local_addr().or_fail("read the port")?;
    Ok(address.to_string())
}

/// The status line of `GET path` at `address`, `None` while nothing listens.
async fn status_line(address: &str, path: &str) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    response.lines().next().map(str::to_string)
}

#[tokio::test]
async fn an_operator_given_a_namespace_leaves_other_namespaces_databases_alone()
-> Result<(), Failed> {
    let cluster = TestCluster::start().await.or_fail("start a sandbox")?;
    // The harness runs the binary with `--namespace <the test's namespace>`.
    let operator = cluster
        .run_binary(LevelId::One)
        .or_fail("start Level 1's binary")?;
    let other = format!("{}-other", cluster.namespace());
    let namespaces: Api<Namespace> = Api::all(cluster.client());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(other.clone()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .or_fail("create another namespace")?;
    let elsewhere: Api<PostgresDB> = Api::namespaced(cluster.client(), &other);
    elsewhere
        .create(
            &PostParams::default(),
            &DbBuilder::manifest("orders").build(),
        )
        .await
        .or_fail("create a PostgresDB in the other namespace")?;
    cluster
        .create(&DbBuilder::manifest("orders").build())
        .await
        .or_fail("create a PostgresDB in the watched namespace")?;
    cluster.wait_for("orders", "Ready", is_settled).await?;
    // A reconcile that began after both databases existed has ended.
    cluster.settle("orders").await?;
    let outside = elsewhere
        .get("orders")
        .await
        .or_fail("read the other database")?;
    ensure(outside.status.is_none(), || {
        format!(
            "the other namespace's database has no status: {:?}",
            outside.status
        )
    })?;
    let sts = Api::<StatefulSet>::namespaced(cluster.client(), &other)
        .get_opt("orders")
        .await
        .or_fail("read the other namespace's StatefulSet")?;
    ensure(sts.is_none(), || {
        "no StatefulSet in the other namespace".into()
    })?;
    operator.stop().await;
    let _ = namespaces.delete(&other, &DeleteParams::default()).await;
    cluster.finish().await;
    Ok(())
}

#[tokio::test]
async fn with_leader_election_a_standby_is_ready_to_take_over_and_json_logs_are_json_lines()
-> Result<(), Failed> {
    let cluster = TestCluster::start().await.or_fail("start a sandbox")?;
    let namespace = cluster.namespace().to_string();
    let start = |address: &str| -> Result<Operator, Failed> {
        cluster
            .run_binary_with(
                LevelId::One,
                &[
                    "--leader-elect",
                    "--lease-namespace",
                    &namespace,
                    "--log-format",
                    "json",
                    "--health-addr",
                    address,
                ],
            )
            .or_fail("start Level 1's binary")
    };
    let first_address = free_address()?;
    let first = start(&first_address)?;
    let ok = "HTTP/1.1 200 OK";
    cluster
        .eventually(cluster.budget(), "the first binary is ready", || async {
            Ok((status_line(&first_address, "/readyz").await.as_deref() == Some(ok)).then_some(()))
        })
        .await?;
    let second_address = free_address()?;
    let second = start(&second_address)?;
    cluster
        .eventually(cluster.budget(), "the second binary stands by", || async {
            let out = second.output().and_then(Result::ok).unwrap_or_default();
            Ok(out.contains("standing by").then_some(()))
        })
        .await?;
    let healthz = status_line(&second_address, "/healthz").await;
    ensure(healthz.as_deref() == Some(ok), || {
        format!("a standby is alive: /healthz {healthz:?}")
    })?;
    let readyz = status_line(&second_address, "/readyz").await;
    ensure(readyz.as_deref() == Some(ok), || {
        format!("a standby is ready to take over: /readyz {readyz:?}")
    })?;
    let readyz = status_line(&first_address, "/readyz").await;
    ensure(readyz.as_deref() == Some(ok), || {
        format!("the leader stays ready: /readyz {readyz:?}")
    })?;
    for (name, operator) in [("first", &first), ("second", &second)] {
        let out = operator
            .output()
            .ok_or_else(|| Failed::new("a binary has output"))?
            .or_fail("read the binary's output")?;
        let not_json: Vec<&str> = out
            .lines()
            .filter(|line| {
                serde_json::from_str::<serde_json::Value>(line).map_or(true, |v| !v.is_object())
            })
            .collect();
        ensure(!out.is_empty() && not_json.is_empty(), || {
            format!("the {name} binary logs JSON objects, one a line; not: {not_json:?}")
        })?;
    }
    second.stop().await;
    first.stop().await;
    cluster.finish().await;
    Ok(())
}
