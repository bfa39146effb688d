//! The tour: one command that shows a level at work.
//!
//! It starts a sandbox (no cluster, no Docker needed; pods run real
//! PostgreSQL when its binaries are installed), installs the CRD,
//! runs the chosen level in this process, applies an example `PostgresDB`,
//! and prints what happens as it happens: objects appearing and changing,
//! the database's phase and conditions, and Events. It prints a kubeconfig
//! path so kubectl can be used in another terminal, and runs until Ctrl-C,
//! stopping everything it started.

use std::collections::HashMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::Api;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use sandbox::{RuntimeKind, Sandbox, SandboxConfig};
use serde::de::DeserializeOwned;
use shared::api::PostgresDB;
use shared::health::Readiness;
use shared::reconcile::error_chain;
use shared::runner::{self, RunOptions};
use tests::harness::install_crd;
use tests::levels::LevelId;

/// Show a level of the PostgresDB operator at work on a sandbox cluster.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The level to run (1 to 5; the levels built so far).
    #[arg(long, default_value_t = 1)]
    level: u8,
    /// The PostgresDB manifest to apply.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/basic.yaml"))]
    example: PathBuf,
    /// Where to write the sandbox's kubeconfig, for kubectl.
    #[arg(long, default_value = "sandbox.kubeconfig")]
    kubeconfig: PathBuf,
    /// Pods run real PostgreSQL when its binaries are installed (auto), or
    /// are simulated.
    #[arg(long, value_enum, default_value_t = RuntimeKind::Auto)]
    runtime: RuntimeKind,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(tour(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn tour(args: Args) -> Result<(), String> {
    let level = LevelId::from_number(args.level).ok_or_else(|| {
        let known: Vec<String> = LevelId::ALL
            .iter()
            .map(|l| l.number().to_string())
            .collect();
        format!(
            "level {} is not built yet (available: {})",
            args.level,
            known.join(", ")
        )
    })?;
    let manifest = std::fs::read_to_string(&args.example)
        .map_err(|e| format!("cannot read {}: {e}", args.example.display()))?;

    let config = SandboxConfig {
        runtime_kind: args.runtime,
        ..Default::default()
    };
    let sandbox = Sandbox::start(config)
        .await
        .map_err(|e| format!("the sandbox did not start: {e}"))?;
    sandbox
        .write_kubeconfig(&args.kubeconfig)
        .map_err(|e| format!("cannot write {}: {e}", args.kubeconfig.display()))?;
    let client = sandbox.client();
    install_crd(&client).await.map_err(|e| error_chain(&e))?;

    let kubeconfig = std::fs::canonicalize(&args.kubeconfig).unwrap_or(args.kubeconfig.clone());
    println!("Sandbox cluster at {} (no Docker, no kind).", sandbox.url());
    println!("{}", sandbox.runtime_description());
    println!(
        "In another terminal:  export KUBECONFIG={}",
        kubeconfig.display()
    );
    println!("                      kubectl get pgdb,sts,pods,svc,pvc -o wide");
    println!(
        "Running {} (level {}); applying {}. Ctrl-C stops everything.\n",
        level.name(),
        level.number(),
        args.example.display()
    );

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = RunOptions {
        readiness: Readiness::default(),
        ..Default::default()
    };
    let operator = tokio::spawn(runner::run(
        level.build(),
        client.clone(),
        options,
        async move {
            let _ = stopped.await;
        },
    ));

    let watchers = vec![
        tokio::spawn(show::<PostgresDB>(client.clone(), summarize_db)),
        tokio::spawn(show::<Secret>(client.clone(), |_| "present".into())),
        tokio::spawn(show::<ConfigMap>(client.clone(), |_| "present".into())),
        tokio::spawn(show::<Service>(client.clone(), summarize_service)),
        tokio::spawn(show::<StatefulSet>(client.clone(), summarize_statefulset)),
        tokio::spawn(show::<PersistentVolumeClaim>(
            client.clone(),
            summarize_claim,
        )),
        tokio::spawn(show::<Pod>(client.clone(), summarize_pod)),
        tokio::spawn(show_events(client.clone())),
    ];

    let mut db: PostgresDB = serde_yaml::from_str(&manifest)
        .map_err(|e| format!("{} is not a PostgresDB: {e}", args.example.display()))?;
    let namespace = db.namespace().unwrap_or_else(|| "default".into());
    db.metadata.namespace = Some(namespace.clone());
    let api: Api<PostgresDB> = Api::namespaced(client.clone(), &namespace);
    api.patch(
        &db.name_any(),
        &kube::api::PatchParams::apply("pgdb-tour").force(),
        &kube::api::Patch::Apply(&db),
    )
    .await
    .map_err(|e| format!("applying the example failed: {e}"))?;

    let hint = tokio::spawn(connection_hint(
        client.clone(),
        namespace.clone(),
        db.name_any(),
    ));
    shared::cli::shutdown_signal().await;
    println!("\nStopping the operator and the sandbox.");
    let _ = stop.send(());
    match operator.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => eprintln!(
            "the operator stopped with an error: {}",
            error_chain(&error)
        ),
        Err(error) => eprintln!("the operator task failed: {error}"),
    }
    hint.abort();
    for watcher in watchers {
        watcher.abort();
    }
    sandbox.shutdown().await;
    Ok(())
}

fn now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    format!(
        "{:02}:{:02}:{:02}",
        (now / 3600) % 24,
        (now / 60) % 60,
        now % 60
    )
}

/// Prints a line whenever an object of kind `K` appears, disappears, or
/// its one-line summary changes.
async fn show<K>(client: Client, summarize: fn(&K) -> String)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + 'static,
{
    let api: Api<K> = Api::all(client);
    let mut last: HashMap<String, String> = HashMap::new();
    let mut events = watcher(api, watcher::Config::default()).boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                let name = format!("{}/{}", K::kind(&()), object.name_any());
                let summary = summarize(&object);
                let previous = last.insert(name.clone(), summary.clone());
                match previous {
                    None => println!("{} + {name}  {summary}", now()),
                    Some(previous) if previous != summary => {
                        println!("{} ~ {name}  {summary}", now())
                    }
                    Some(_) => {}
                }
            }
            Ok(watcher::Event::Delete(object)) => {
                let name = format!("{}/{}", K::kind(&()), object.name_any());
                last.remove(&name);
                println!("{} - {name}  deleted", now());
            }
            Ok(_) => {}
            Err(error) => println!("{} ! watching {} failed: {error}", now(), K::plural(&())),
        }
    }
}

async fn show_events(client: Client) {
    let api: Api<Event> = Api::all(client);
    // The recorder counts repeats of an Event in its series; print each
    // Event once, and again only when it repeats.
    let mut seen: HashMap<String, i32> = HashMap::new();
    let mut events = watcher(api, watcher::Config::default()).boxed();
    while let Some(event) = events.next().await {
        if let Ok(watcher::Event::Apply(e) | watcher::Event::InitApply(e)) = event {
            let count = e.series.as_ref().map(|s| s.count).unwrap_or(1);
            if seen.insert(e.name_any(), count) == Some(count) {
                continue;
            }
            let repeats = if count > 1 {
                format!(" (x{count})")
            } else {
                String::new()
            };
            let about = e.regarding.as_ref().map(|r| {
                format!(
                    "{}/{}",
                    r.kind.clone().unwrap_or_default(),
                    r.name.clone().unwrap_or_default()
                )
            });
            println!(
                "{} * Event {} {} on {}: {}{repeats}",
                now(),
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                about.unwrap_or_default(),
                e.note.unwrap_or_default()
            );
        }
    }
}

fn summarize_db(db: &PostgresDB) -> String {
    let Some(status) = &db.status else {
        return format!("version {} (no status yet)", db.spec.version);
    };
    let conditions: Vec<String> = status
        .conditions
        .iter()
        .map(|c| format!("{}={} ({})", c.type_, c.status, c.reason))
        .collect();
    format!(
        "phase {}, version {} running {}, {}",
        status.phase.map(|p| format!("{p:?}")).unwrap_or_default(),
        db.spec.version,
        status.current_version.as_deref().unwrap_or("nothing yet"),
        conditions.join(", ")
    )
}

fn summarize_service(service: &Service) -> String {
    let spec = service.spec.clone().unwrap_or_default();
    format!("clusterIP {}", spec.cluster_ip.unwrap_or_default())
}

fn summarize_statefulset(sts: &StatefulSet) -> String {
    let ready = sts
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let image = sts
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref()?.containers.first()?.image.clone())
        .unwrap_or_default();
    format!("ready {ready}/{replicas}, image {image}")
}

fn summarize_claim(claim: &PersistentVolumeClaim) -> String {
    let status = claim.status.clone().unwrap_or_default();
    let capacity = status
        .capacity
        .and_then(|c| c.get("storage").map(|q| q.0.clone()))
        .unwrap_or_default();
    format!("{} {capacity}", status.phase.unwrap_or_default())
}

fn summarize_pod(pod: &Pod) -> String {
    let status = pod.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let restarts: i32 = status
        .container_statuses
        .iter()
        .flatten()
        .map(|c| c.restart_count)
        .sum();
    let waiting: Vec<String> = status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
        .collect();
    format!(
        "{}{}, ready {ready}, restarts {restarts}{}",
        status.phase.unwrap_or_default(),
        status
            .pod_ip
            .map(|ip| format!(" at {ip}"))
            .unwrap_or_default(),
        if waiting.is_empty() {
            String::new()
        } else {
            format!(", waiting: {}", waiting.join(", "))
        }
    )
}

/// Once the database is ready, says how to connect to it with psql, without
/// printing the password.
async fn connection_hint(client: Client, namespace: String, name: String) {
    let databases: Api<PostgresDB> = Api::namespaced(client.clone(), &namespace);
    loop {
        let ready = databases
            .get_opt(&name)
            .await
            .ok()
            .flatten()
            .and_then(|db| db.status?.phase)
            == Some(shared::api::Phase::Ready);
        if ready {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let Ok(Some(db)) = databases.get_opt(&name).await else {
        return;
    };
    let services: Api<Service> = Api::namespaced(client, &namespace);
    let cluster_ip = services
        .get_opt(&name)
        .await
        .ok()
        .flatten()
        .and_then(|s| s.spec?.cluster_ip)
        .unwrap_or_default();
    let secret = db
        .status
        .and_then(|s| s.credentials_secret)
        .unwrap_or_default();
    println!(
        "\n{} Connect (the sandbox's Service addresses are real loopback addresses):\n  PGPASSWORD=$(kubectl -n {namespace} get secret {secret} -o jsonpath='{{.data.password}}' | base64 -d) psql -h {cluster_ip} -U {} {}\n",
        now(),
        db.spec.database.owner,
        db.spec.database.name
    );
}
