//! Authentication and the ServiceAccount admission plugin, as
//! kube-apiserver does them: bearer tokens (the admin's, ServiceAccount
//! tokens from the TokenRequest API), 401 for anything else, the HTTPS
//! listener in-cluster clients verify with the cluster CA, each
//! namespace's `default` ServiceAccount and `kube-root-ca.crt`, and the
//! token volume every pod gets.

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use sandbox::Sandbox;
use serde_json::{Value, json};

use crate::common::{api_err, eventually, sandbox};

/// A kube-rs client for `url` sending `token` (if any), trusting `ca_der`
/// (if any).
fn client_for(url: &str, token: Option<&str>, ca_der: Option<Vec<u8>>) -> kube::Client {
    let mut config = kube::Config::new(url.parse().expect("a URL"));
    config.auth_info.token = token.map(|t| t.to_string().into());
    config.root_cert = ca_der.map(|c| vec![c]);
    kube::Client::try_from(config).expect("a client")
}

/// A client of the plain listener sending `token`.
fn client_with_token(sb: &Sandbox, token: &str) -> kube::Client {
    client_for(&sb.url(), Some(token), None)
}

fn service_account(name: &str) -> ServiceAccount {
    serde_json::from_value(json!({"metadata": {"name": name}})).expect("a ServiceAccount")
}

async fn create_service_account(sb: &Sandbox, ns: &str, name: &str) -> ServiceAccount {
    Api::<ServiceAccount>::namespaced(sb.client(), ns)
        .create(&PostParams::default(), &service_account(name))
        .await
        .expect("the ServiceAccount is created")
}

fn pod(name: &str, spec: Value) -> Pod {
    let mut spec = spec;
    spec["containers"] = json!([{"name": "app", "image": "busybox"}]);
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("a Pod")
}

/// A token for `ns/name` from the TokenRequest API (`kubectl create token`).
async fn token_for(sb: &Sandbox, ns: &str, name: &str, bound: Option<&Pod>) -> String {
    let mut spec = json!({"expirationSeconds": 3600});
    if let Some(p) = bound {
        spec["boundObjectRef"] = json!({"kind": "Pod", "apiVersion": "v1",
            "name": p.metadata.name, "uid": p.metadata.uid});
    }
    let request: TokenRequest =
        serde_json::from_value(json!({"spec": spec})).expect("a TokenRequest");
    let answer = Api::<ServiceAccount>::namespaced(sb.client(), ns)
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .expect("the token is issued");
    answer.status.expect("a status").token
}

/// A GET over a plain connection with `headers` as sent: the status code
/// and the body (the exact bytes kube-rs would parse away).
async fn http_get(sb: &Sandbox, path: &str, headers: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(sb.addr())
        .await
        .expect("connects");
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("sends");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("reads");
    let code = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

fn code_of<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> u16 {
    api_err(r).code
}

/// Upstream: a request without credentials, or with a token the server did
/// not issue, is 401 with the Status `Unauthorized`; `/healthz`,
/// `/livez`, `/readyz` and `/version` stay open to anonymous clients
/// (system:public-info-viewer).
#[tokio::test]
async fn requests_without_a_valid_token_get_401_and_health_and_version_stay_open() {
    let sb = sandbox().await;
    let anonymous = client_for(&sb.url(), None, None);
    let wrong = client_with_token(&sb, "not-a-token");
    for client in [anonymous.clone(), wrong] {
        let status = api_err(
            Api::<Pod>::namespaced(client, "default")
                .list(&ListParams::default())
                .await,
        );
        assert_eq!((status.code, status.reason.as_str()), (401, "Unauthorized"));
    }
    for authorization in ["", "Authorization: Bearer not-a-token\r\n"] {
        let (code, body) = http_get(&sb, "/api/v1/namespaces/default/pods", authorization).await;
        assert_eq!(code, 401);
        assert_eq!(
            serde_json::from_str::<Value>(&body).expect("a Status"),
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
        );
    }
    anonymous
        .apiserver_version()
        .await
        .expect("/version is open");
    for path in ["/healthz", "/livez", "/readyz"] {
        let req = http::Request::get(path).body(vec![]).expect("a request");
        let text = anonymous.request_text(req).await.expect("health is open");
        assert_eq!(text, "ok");
    }
    // system:public-info-viewer names exact paths: what lies under them
    // needs credentials.
    for path in ["/healthz/anything", "/livez/x", "/readyz/x", "/version/x"] {
        let (code, _) = http_get(&sb, path, "").await;
        assert_eq!(code, 401, "{path}");
    }
    let (code, _) = http_get(&sb, "/version/", "").await;
    assert_eq!(code, 200, "/version/ is open");
    Api::<Pod>::default_namespaced(sb.client())
        .list(&ListParams::default())
        .await
        .expect("the sandbox's own client carries the admin token");
    assert!(sb.kubeconfig_yaml().contains(sb.admin_token()));
}

/// Upstream: every namespace has a `default` ServiceAccount and a
/// `kube-root-ca.crt` ConfigMap whose `ca.crt` is the cluster CA.
#[tokio::test]
async fn every_namespace_has_a_default_service_account_and_the_root_ca() {
    let sb = sandbox().await;
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "team"}})).expect("a Namespace");
    Api::<Namespace>::all(sb.client())
        .create(&PostParams::default(), &ns)
        .await
        .expect("the namespace is created");
    for ns in ["default", "kube-system", "team"] {
        Api::<ServiceAccount>::namespaced(sb.client(), ns)
            .get("default")
            .await
            .expect("the default ServiceAccount exists");
        let ca = Api::<ConfigMap>::namespaced(sb.client(), ns)
            .get("kube-root-ca.crt")
            .await
            .expect("kube-root-ca.crt exists");
        assert_eq!(ca.data.expect("data")["ca.crt"], sb.ca_pem());
    }
}

/// Upstream's TokenRequest: a token identifies its ServiceAccount only
/// while that ServiceAccount exists with the uid it was issued for, and a
/// token bound to a pod only while the pod exists; a duration under ten
/// minutes is refused.
#[tokio::test]
async fn a_service_account_token_stops_working_when_its_account_or_pod_is_deleted() {
    let sb = sandbox().await;
    create_service_account(&sb, "default", "app").await;
    let token = token_for(&sb, "default", "app", None).await;
    let as_app = client_with_token(&sb, &token);
    as_app.apiserver_version().await.expect("/version");
    // Listing needs authentication only to get past 401 (RBAC decides the rest).
    let listed = Api::<Pod>::default_namespaced(as_app.clone())
        .list(&ListParams::default())
        .await;
    assert_ne!(listed.err().map(|e| code_of::<()>(Err(e))), Some(401));

    let accounts = Api::<ServiceAccount>::default_namespaced(sb.client());
    accounts
        .delete("app", &DeleteParams::default())
        .await
        .expect("the ServiceAccount is deleted");
    assert_eq!(
        code_of(
            Api::<Pod>::default_namespaced(as_app.clone())
                .list(&ListParams::default())
                .await
        ),
        401
    );
    create_service_account(&sb, "default", "app").await;
    assert_eq!(
        code_of(
            Api::<Pod>::default_namespaced(as_app)
                .list(&ListParams::default())
                .await
        ),
        401,
        "a token for the ServiceAccount's previous uid"
    );

    let pods = Api::<Pod>::default_namespaced(sb.client());
    let p = pods
        .create(
            &PostParams::default(),
            &pod("bound", json!({"serviceAccountName": "app"})),
        )
        .await
        .expect("the pod is created");
    let bound = client_with_token(&sb, &token_for(&sb, "default", "app", Some(&p)).await);
    let listed = Api::<Pod>::default_namespaced(bound.clone())
        .list(&ListParams::default())
        .await;
    assert_ne!(listed.err().map(|e| code_of::<()>(Err(e))), Some(401));
    pods.delete("bound", &DeleteParams::default().grace_period(0))
        .await
        .expect("the pod is deleted");
    eventually("the pod is gone", || async {
        pods.get_opt("bound")
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(
        code_of(
            Api::<Pod>::default_namespaced(bound)
                .list(&ListParams::default())
                .await
        ),
        401
    );

    let short: TokenRequest =
        serde_json::from_value(json!({"spec": {"expirationSeconds": 60}})).expect("a TokenRequest");
    let status = api_err(
        Api::<ServiceAccount>::default_namespaced(sb.client())
            .create_token_request("app", &PostParams::default(), &short)
            .await,
    );
    assert_eq!(status.code, 422);
    assert!(
        status
            .message
            .contains("may not specify a duration less than 10 minutes"),
        "{}",
        status.message
    );
}

/// Upstream: a token carries the audiences it was requested for
/// (`kubectl create token --audience=vault`), and the API server accepts
/// only tokens whose audiences include its own: one made for another
/// audience gets 401; one made without audiences is for the API server.
#[tokio::test]
async fn a_token_for_another_audience_is_refused_by_the_api_server() {
    let sb = sandbox().await;
    create_service_account(&sb, "default", "app").await;
    let request: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": ["vault"]}})).expect("a TokenRequest");
    let answer = Api::<ServiceAccount>::default_namespaced(sb.client())
        .create_token_request("app", &PostParams::default(), &request)
        .await
        .expect("the token is issued");
    assert_eq!(answer.spec.audiences, vec!["vault".to_string()]);
    let for_vault = client_with_token(&sb, &answer.status.expect("a status").token);
    assert_eq!(
        code_of(
            Api::<Pod>::default_namespaced(for_vault)
                .list(&ListParams::default())
                .await
        ),
        401
    );
    let default: TokenRequest =
        serde_json::from_value(json!({"spec": {}})).expect("a TokenRequest");
    let answer = Api::<ServiceAccount>::default_namespaced(sb.client())
        .create_token_request("app", &PostParams::default(), &default)
        .await
        .expect("the token is issued");
    assert_eq!(
        answer.spec.audiences,
        vec!["https://kubernetes.default.svc.cluster.local".to_string()]
    );
    client_with_token(&sb, &answer.status.expect("a status").token)
        .apiserver_version()
        .await
        .expect("a token for the API server's audience works");
    let listed = Api::<Pod>::default_namespaced(client_with_token(
        &sb,
        &token_for(&sb, "default", "app", None).await,
    ))
    .list(&ListParams::default())
    .await;
    assert_ne!(listed.err().map(|e| code_of::<()>(Err(e))), Some(401));
}

/// Upstream's TokenRequest with `--service-account-extend-token-expiration`
/// (the default): a token bound to a pod and asked for 3607 seconds, as the
/// kubelet asks for a pod's token volume, is valid for a year while the
/// answer reports the hour asked for; any other duration is issued as
/// asked.
#[tokio::test]
async fn a_pods_3607_second_token_is_issued_for_a_year_as_upstream_extends_it() {
    let sb = sandbox().await;
    create_service_account(&sb, "default", "app").await;
    let p = Api::<Pod>::default_namespaced(sb.client())
        .create(
            &PostParams::default(),
            &pod("extended", json!({"serviceAccountName": "app"})),
        )
        .await
        .expect("the pod is created");
    let now = jiff::Timestamp::now().as_second();
    let issue = |seconds: i64| {
        let request: TokenRequest = serde_json::from_value(json!({"spec": {
            "expirationSeconds": seconds,
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "extended", "uid": p.metadata.uid},
        }}))
        .expect("a TokenRequest");
        let accounts = Api::<ServiceAccount>::default_namespaced(sb.client());
        async move {
            let answer = accounts
                .create_token_request("app", &PostParams::default(), &request)
                .await
                .expect("the token is issued")
                .status
                .expect("a status");
            let reported = answer.expiration_timestamp.0.as_second();
            (expiry_claim(&answer.token), reported)
        }
    };
    let (exp, reported) = issue(3607).await;
    assert!(exp >= now + 365 * 24 * 3600 - 60, "exp {exp}, now {now}");
    assert!(
        (now + 3607..now + 3607 + 60).contains(&reported),
        "the answer reports the hour asked for: {reported}"
    );
    let (exp, _) = issue(3600).await;
    assert!(exp < now + 3600 + 60, "exp {exp}, now {now}");
}

/// The `exp` claim of a JWT.
fn expiry_claim(token: &str) -> i64 {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice::<Value>(&bytes).expect("JSON")["exp"]
        .as_i64()
        .expect("exp")
}

/// Upstream's ServiceAccount admission: a pod naming a ServiceAccount that
/// does not exist is refused with 403 and this message.
#[tokio::test]
async fn a_pod_whose_service_account_does_not_exist_is_refused() {
    let sb = sandbox().await;
    let status = api_err(
        Api::<Pod>::default_namespaced(sb.client())
            .create(
                &PostParams::default(),
                &pod("x", json!({"serviceAccountName": "missing"})),
            )
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        status.message,
        "pods \"x\" is forbidden: error looking up service account default/missing: serviceaccount \"missing\" not found"
    );
}

/// Upstream's ServiceAccount admission: `serviceAccountName` defaults to
/// `default`; every container gets the projected `kube-api-access-*`
/// volume (token, ca.crt, namespace) read-only at the ServiceAccount path,
/// unless `automountServiceAccountToken` is false on the pod or its
/// ServiceAccount.
#[tokio::test]
async fn pods_get_the_service_account_token_volume_unless_automount_is_off() {
    let sb = sandbox().await;
    let pods = Api::<Pod>::default_namespaced(sb.client());
    let created = pods
        .create(&PostParams::default(), &pod("with-token", json!({})))
        .await
        .expect("the pod is created");
    let v = serde_json::to_value(&created).expect("a pod");
    assert_eq!(v["spec"]["serviceAccountName"], "default");
    let volume = &v["spec"]["volumes"][0];
    let name = volume["name"].as_str().expect("a volume name");
    let suffix = name.strip_prefix("kube-api-access-").expect("the prefix");
    assert!(
        suffix.len() == 5
            && suffix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "{name}"
    );
    assert_eq!(
        volume["projected"]["sources"],
        json!([
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ])
    );
    assert_eq!(
        v["spec"]["containers"][0]["volumeMounts"],
        json!([{"name": name, "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}])
    );

    let off = pods
        .create(
            &PostParams::default(),
            &pod("pod-off", json!({"automountServiceAccountToken": false})),
        )
        .await
        .expect("the pod is created");
    assert!(
        off.spec
            .expect("a spec")
            .volumes
            .is_none_or(|v| v.is_empty())
    );
    let sa: ServiceAccount = serde_json::from_value(
        json!({"metadata": {"name": "quiet"}, "automountServiceAccountToken": false}),
    )
    .expect("a ServiceAccount");
    Api::<ServiceAccount>::default_namespaced(sb.client())
        .create(&PostParams::default(), &sa)
        .await
        .expect("the ServiceAccount is created");
    let quiet = pods
        .create(
            &PostParams::default(),
            &pod("sa-off", json!({"serviceAccountName": "quiet"})),
        )
        .await
        .expect("the pod is created");
    assert!(
        quiet
            .spec
            .expect("a spec")
            .volumes
            .is_none_or(|v| v.is_empty())
    );
}

/// The HTTPS listener in-cluster clients use: verified with the cluster
/// CA (as kube-rs's in-cluster configuration does with `ca.crt`), it
/// serves a ServiceAccount's token; a client that does not trust the CA
/// fails the handshake.
#[tokio::test]
async fn the_https_listener_is_verified_with_the_cluster_ca() {
    let sb = sandbox().await;
    create_service_account(&sb, "default", "app").await;
    let token = token_for(&sb, "default", "app", None).await;
    let ca_der = sb.cluster().auth.serving().ca_der.clone();
    let in_cluster = client_for(&sb.https_url(), Some(&token), Some(ca_der.clone()));
    in_cluster
        .apiserver_version()
        .await
        .expect("the CA verifies the listener");
    let admin = client_for(&sb.https_url(), Some(sb.admin_token()), Some(ca_der));
    Api::<Pod>::default_namespaced(admin)
        .list(&ListParams::default())
        .await
        .expect("the admin lists pods over HTTPS");
    let untrusting = client_for(&sb.https_url(), Some(&token), None);
    match untrusting.apiserver_version().await {
        Err(kube::Error::Api(s)) => panic!("expected a TLS failure, got {s:?}"),
        Err(_) => {}
        Ok(v) => panic!("a client without the CA connected: {v:?}"),
    }
    assert_eq!(
        sb.cluster()
            .auth
            .in_cluster_endpoint()
            .map(|a| format!("https://{a}")),
        Some(sb.https_url())
    );
}
