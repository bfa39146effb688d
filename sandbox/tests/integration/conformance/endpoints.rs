//! Endpoints and EndpointSlices of a Service (upstream's endpoints and
//! endpointslice controllers): pods the selector matches that are not ready
//! are listed apart (`notReadyAddresses`; `conditions.ready: false`), and a
//! named `targetPort` resolves to the pod's container port of that name.

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use crate::common::{eventually, sandbox};

/// Upstream: an unready pod is a `notReadyAddress` of the Service's
/// Endpoints and an endpoint with `ready: false` in its slice; once ready it
/// moves to `addresses`. A named targetPort is the pod's port of that name.
#[tokio::test]
async fn unready_pods_are_listed_apart_and_named_target_ports_resolve() {
    let sb = sandbox().await;
    let runtime = sb.simulated_runtime().expect("the simulated runtime");
    runtime.set_ready("default", "p", Some(false));
    let svcs: Api<Service> = Api::default_namespaced(sb.client());
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "pg"},
        "spec": {"selector": {"app": "pg"},
                 "ports": [{"name": "sql", "port": 15432, "targetPort": "postgres"}]}}))
    .expect("a Service");
    svcs.create(&PostParams::default(), &svc)
        .await
        .expect("the Service is created");
    let pods: Api<Pod> = Api::default_namespaced(sb.client());
    let pod: Pod =
        serde_json::from_value(json!({"metadata": {"name": "p", "labels": {"app": "pg"}},
        "spec": {"containers": [{"name": "db", "image": "postgres:16",
                 "ports": [{"name": "postgres", "containerPort": 5432}]}]}}))
        .expect("a pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("the pod is created");
    let eps: Api<Endpoints> = Api::default_namespaced(sb.client());
    let subset = eventually("p listed as not ready", || {
        let eps = eps.clone();
        async move {
            let subset = eps.get("pg").await.ok()?.subsets?.into_iter().next()?;
            (subset.not_ready_addresses.as_ref()?.len() == 1).then_some(subset)
        }
    })
    .await;
    assert!(
        subset.addresses.unwrap_or_default().is_empty(),
        "an unready pod is not an address"
    );
    let port = &subset.ports.expect("ports")[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("sql"), 5432));
    // The slice is written after the Endpoints object (as upstream, where
    // two controllers write them): read apart, it may lag a moment (a full
    // run once read it empty).
    let slices: Api<EndpointSlice> = Api::default_namespaced(sb.client());
    let endpoint = eventually("p in the Service's EndpointSlice", || {
        let slices = slices.clone();
        async move {
            let selector = ListParams::default().labels("kubernetes.io/service-name=pg");
            slices
                .list(&selector)
                .await
                .ok()?
                .items
                .into_iter()
                .find_map(|slice| slice.endpoints.into_iter().next())
        }
    })
    .await;
    assert_eq!(
        endpoint.conditions.as_ref().and_then(|c| c.ready),
        Some(false)
    );
    runtime.set_ready("default", "p", None);
    eventually("p listed as ready", || {
        let eps = eps.clone();
        async move {
            let subset = eps.get("pg").await.ok()?.subsets?.into_iter().next()?;
            (subset.addresses.as_ref()?.len() == 1
                && subset.not_ready_addresses.unwrap_or_default().is_empty())
            .then_some(())
        }
    })
    .await;
}
