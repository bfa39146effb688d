//! Kubernetes service discovery, role `endpoints`, for a Prometheus built
//! without it.
//!
//! Debian's `prometheus` package is built without Kubernetes service
//! discovery (`kubernetes_sd_configs` is not a field of its scrape
//! configs). With it, the harness serves Prometheus's HTTP service
//! discovery (`http_sd_configs`) instead: each answer lists the cluster's
//! Endpoints, Services and Pods in the watched namespaces and turns them
//! into target groups carrying the labels Kubernetes discovery gives
//! (`__meta_kubernetes_namespace`, `__meta_kubernetes_service_name`,
//! `__meta_kubernetes_service_label_<name>`,
//! `__meta_kubernetes_endpoint_port_name`, `__meta_kubernetes_endpoint_ready`,
//! `__meta_kubernetes_pod_name`, ...: upstream's
//! `discovery/kubernetes/endpoints.go`), so the same relabelling selects
//! the same targets either way. Prometheus asks again every
//! refresh interval; a failed listing answers 500, which Prometheus logs
//! while it keeps its last targets.
//!
//! Where it stops: one target per address and Endpoints port (upstream
//! also adds targets for container ports no Endpoints port covers), no
//! annotations, node or namespace metadata, and lists rather than watches
//! (the tests' clusters are small).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

use super::http;

const META: &str = "__meta_kubernetes_";

/// A label name as Prometheus makes one from a Kubernetes label key:
/// every character other than a letter, digit or `_` becomes `_`.
pub fn sanitize(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `labels` as `<prefix>label_<name>` and `<prefix>labelpresent_<name>`.
fn add_labels(
    out: &mut BTreeMap<String, String>,
    prefix: &str,
    labels: Option<&BTreeMap<String, String>>,
) {
    for (k, v) in labels.into_iter().flatten() {
        let name = sanitize(k);
        out.insert(format!("{META}{prefix}_label_{name}"), v.clone());
        out.insert(format!("{META}{prefix}_labelpresent_{name}"), "true".into());
    }
}

/// The target groups of one Endpoints object, with its Service (same
/// name, when there is one) and the pods its addresses refer to.
pub fn endpoints_groups(eps: &Endpoints, service: Option<&Service>, pods: &[Pod]) -> Vec<Value> {
    let ns = eps.metadata.namespace.clone().unwrap_or_default();
    let name = eps.metadata.name.clone().unwrap_or_default();
    let mut common = BTreeMap::new();
    common.insert(format!("{META}namespace"), ns.clone());
    common.insert(format!("{META}endpoints_name"), name.clone());
    add_labels(&mut common, "endpoints", eps.metadata.labels.as_ref());
    if let Some(svc) = service {
        common.insert(format!("{META}service_name"), name.clone());
        add_labels(&mut common, "service", svc.metadata.labels.as_ref());
    }
    let mut groups = vec![];
    for subset in eps.subsets.iter().flatten() {
        for port in subset.ports.iter().flatten() {
            let ready = subset.addresses.iter().flatten().map(|a| (a, "true"));
            let not_ready = subset
                .not_ready_addresses
                .iter()
                .flatten()
                .map(|a| (a, "false"));
            for (addr, is_ready) in ready.chain(not_ready) {
                let mut labels = common.clone();
                labels.insert("__address__".into(), format!("{}:{}", addr.ip, port.port));
                labels.insert(
                    format!("{META}endpoint_port_name"),
                    port.name.clone().unwrap_or_default(),
                );
                labels.insert(
                    format!("{META}endpoint_port_protocol"),
                    port.protocol.clone().unwrap_or_else(|| "TCP".into()),
                );
                labels.insert(format!("{META}endpoint_ready"), is_ready.into());
                if let Some(node) = &addr.node_name {
                    labels.insert(format!("{META}endpoint_node_name"), node.clone());
                }
                if let Some(host) = &addr.hostname {
                    labels.insert(format!("{META}endpoint_hostname"), host.clone());
                }
                if let Some(target) = &addr.target_ref {
                    let kind = target.kind.clone().unwrap_or_default();
                    let tname = target.name.clone().unwrap_or_default();
                    labels.insert(format!("{META}endpoint_address_target_kind"), kind.clone());
                    labels.insert(format!("{META}endpoint_address_target_name"), tname.clone());
                    let pod = pods.iter().find(|p| {
                        kind == "Pod" && p.metadata.name.as_deref() == Some(tname.as_str())
                    });
                    if let Some(pod) = pod {
                        labels.insert(format!("{META}pod_name"), tname);
                        add_labels(&mut labels, "pod", pod.metadata.labels.as_ref());
                        let status = pod.status.as_ref();
                        let spec = pod.spec.as_ref();
                        labels.insert(
                            format!("{META}pod_ip"),
                            status.and_then(|s| s.pod_ip.clone()).unwrap_or_default(),
                        );
                        labels.insert(
                            format!("{META}pod_node_name"),
                            spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
                        );
                        labels.insert(
                            format!("{META}pod_uid"),
                            pod.metadata.uid.clone().unwrap_or_default(),
                        );
                        labels.insert(
                            format!("{META}pod_phase"),
                            status.and_then(|s| s.phase.clone()).unwrap_or_default(),
                        );
                    }
                }
                let address = labels.remove("__address__").unwrap_or_default();
                groups.push(json!({"targets": [address], "labels": labels}));
            }
        }
    }
    groups
}

/// Every target group of the watched namespaces, as discovery sees them now.
pub async fn target_groups(
    client: &kube::Client,
    namespaces: &[String],
) -> Result<Vec<Value>, kube::Error> {
    let mut groups = vec![];
    for ns in namespaces {
        let lp = ListParams::default();
        let eps = Api::<Endpoints>::namespaced(client.clone(), ns)
            .list(&lp)
            .await?;
        let svcs = Api::<Service>::namespaced(client.clone(), ns)
            .list(&lp)
            .await?;
        let pods = Api::<Pod>::namespaced(client.clone(), ns).list(&lp).await?;
        for ep in &eps.items {
            let svc = svcs
                .items
                .iter()
                .find(|s| s.metadata.name == ep.metadata.name);
            groups.extend(endpoints_groups(ep, svc, &pods.items));
        }
    }
    Ok(groups)
}

/// The HTTP service discovery the harness serves, stopped when dropped.
pub struct HttpDiscovery {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl HttpDiscovery {
    /// Serves the target groups of `namespaces` on a free port of 127.0.0.1.
    pub async fn start(client: kube::Client, namespaces: Vec<String>) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (client, namespaces) = (client.clone(), namespaces.clone());
                tokio::spawn(async move {
                    if http::read_request(&mut stream).await.is_err() {
                        return;
                    }
                    let _ = match target_groups(&client, &namespaces).await {
                        Ok(groups) => {
                            let body = serde_json::to_vec(&groups).unwrap_or_default();
                            http::respond(&mut stream, "200 OK", "application/json", &body).await
                        }
                        Err(e) => {
                            let body = format!("cannot list the cluster's endpoints: {e}");
                            http::respond(
                                &mut stream,
                                "500 Internal Server Error",
                                "text/plain",
                                body.as_bytes(),
                            )
                            .await
                        }
                    };
                });
            }
        });
        Ok(Self { addr, task })
    }

    /// The URL Prometheus's `http_sd_configs` asks.
    pub fn url(&self) -> String {
        format!("http://{}/targets", self.addr)
    }
}

impl Drop for HttpDiscovery {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoints_address_gets_kubernetes_discoverys_labels() {
        let svc: Service = serde_json::from_value(
            json!({"metadata": {"name": "pgdb-operator-metrics", "namespace": "ops",
            "labels": {"app.kubernetes.io/name": "pgdb-operator"}}}),
        )
        .expect("a service");
        let eps: Endpoints = serde_json::from_value(json!({"metadata": {"name": "pgdb-operator-metrics", "namespace": "ops"},
            "subsets": [{"addresses": [{"ip": "127.0.0.1"}],
                         "notReadyAddresses": [{"ip": "127.0.0.2", "targetRef": {"kind": "Pod", "name": "p"}}],
                         "ports": [{"name": "metrics", "port": 8080, "protocol": "TCP"}]}]}))
        .expect("endpoints");
        let pod: Pod = serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "ops", "labels": {"app": "x"}}}),
        )
        .expect("a pod");
        let groups = endpoints_groups(&eps, Some(&svc), &[pod]);
        assert_eq!(groups.len(), 2);
        let first = &groups[0];
        assert_eq!(first["targets"], json!(["127.0.0.1:8080"]));
        let l = &first["labels"];
        assert_eq!(l["__meta_kubernetes_namespace"], "ops");
        assert_eq!(l["__meta_kubernetes_service_name"], "pgdb-operator-metrics");
        assert_eq!(
            l["__meta_kubernetes_service_label_app_kubernetes_io_name"],
            "pgdb-operator"
        );
        assert_eq!(
            l["__meta_kubernetes_service_labelpresent_app_kubernetes_io_name"],
            "true"
        );
        assert_eq!(l["__meta_kubernetes_endpoint_port_name"], "metrics");
        assert_eq!(l["__meta_kubernetes_endpoint_ready"], "true");
        let second = &groups[1]["labels"];
        assert_eq!(second["__meta_kubernetes_endpoint_ready"], "false");
        assert_eq!(second["__meta_kubernetes_pod_name"], "p");
        assert_eq!(second["__meta_kubernetes_pod_label_app"], "x");
    }
}
