//! The tour: one command that shows a level at work.
//!
//! It starts a sandbox (no cluster, no Docker needed; pods run real
//! PostgreSQL when its binaries are installed), installs the CRD, runs the
//! chosen level in this process, applies an example `PostgresDB`, and
//! prints what happens as it happens: objects appearing and changing, the
//! database's phase and conditions, and Events. It prints a kubeconfig
//! path so kubectl can be used in another terminal, and runs until Ctrl-C,
//! stopping everything it started.
//!
//! The cluster outlives the operator: commands typed into the tour stop,
//! kill, restart or swap the operator (`help` lists them), and
//! `--no-operator` starts none, for an operator run as its own process.
//! `--scenario NAME` runs one behaviour scenario instead and prints what
//! it observed.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::Api;
use kube::{Client, ResourceExt};
use sandbox::{RuntimeKind, Sandbox, SandboxConfig};
use shared::api::PostgresDB;
use shared::reconcile::error_chain;
use tests::course::find_example;
use tests::harness::install_crd;
use tests::levels::LevelId;

mod control;
mod scenario;
mod watch;

use watch::{
    now, show, show_events, summarize_backup, summarize_claim, summarize_db, summarize_pod,
    summarize_service, summarize_statefulset,
};

/// Show a level of the PostgresDB operator at work on a sandbox cluster.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The level to run (1 to 5; Level 4 and above also serve their
    /// metrics on a local port, and say where).
    #[arg(long, default_value_t = 1)]
    level: u8,
    /// The PostgresDB manifest to apply (default: examples/basic.yaml of the
    /// clone, found from the current directory up).
    #[arg(long)]
    example: Option<PathBuf>,
    /// Apply no example: start with an empty cluster.
    #[arg(long, conflicts_with = "example")]
    no_example: bool,
    /// Where to write the sandbox's kubeconfig, for kubectl.
    #[arg(long, default_value = "sandbox.kubeconfig")]
    kubeconfig: PathBuf,
    /// Pods run real PostgreSQL when its binaries are installed (auto), or
    /// are simulated.
    #[arg(long, value_enum, default_value_t = RuntimeKind::Auto)]
    runtime: RuntimeKind,
    /// Start no operator: run one as its own process against the printed
    /// kubeconfig (or type `start` later).
    #[arg(long)]
    no_operator: bool,
    /// Deploy the operator in the cluster as users do (`kubectl apply -k
    /// deploy/overlays/<level crate>`: two replicas under their
    /// ServiceAccount, one leader) instead of running it in this process.
    /// Needs the real pod runtime, which runs the image as the level's binary.
    #[arg(long, conflicts_with = "no_operator")]
    in_cluster: bool,
    /// Run this behaviour scenario (as `PGDB_SCENARIOS` names it) against
    /// `--level` on a sandbox of its own, print what it observed, and exit.
    /// `--scenario list` lists them.
    #[arg(long, value_name = "NAME")]
    scenario: Option<String>,
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
    let result = match args.scenario.clone() {
        Some(name) => runtime.block_on(scenario::run(&name, args.level)),
        None => runtime.block_on(tour(args)).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The level numbered `number`, or an error listing the built ones.
pub fn level_of(number: u8) -> Result<LevelId, String> {
    LevelId::from_number(number).ok_or_else(|| {
        let known: Vec<String> = LevelId::ALL
            .iter()
            .map(|l| l.number().to_string())
            .collect();
        format!(
            "level {number} is not built yet (available: {})",
            known.join(", ")
        )
    })
}

async fn tour(args: Args) -> Result<(), String> {
    let level = level_of(args.level)?;
    let example = if args.no_example {
        None
    } else {
        let path = match &args.example {
            Some(path) => path.clone(),
            None => find_example("basic.yaml")?,
        };
        let manifest = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let db: PostgresDB = serde_yaml::from_str(&manifest)
            .map_err(|e| format!("{} is not a PostgresDB: {e}", path.display()))?;
        Some((path, db))
    };

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
    println!("                      kubectl get pgdb,pgbackup,sts,pods,svc,pvc -o wide");
    if args.in_cluster {
        if sandbox.postgres_runtime().is_none() {
            return Err(
                "--in-cluster runs the operator's image as a pod, which needs the real pod runtime: install PostgreSQL with scripts/install-postgres.sh (and build the levels with `cargo build --workspace --bins`)".into(),
            );
        }
        println!(
            "Deploying {} in-cluster: kubectl apply -k {}",
            level.name(),
            tests::deploy::overlay(level).display()
        );
        tests::harness::in_cluster::apply_overlay(&kubeconfig, level)
            .await
            .map_err(|failed| failed.to_string())?;
        println!(
            "The operator runs as the Deployment {ns}/{deploy} (two pods, one leader):
  kubectl -n {ns} get deploy,pods,lease
  kubectl -n {ns} logs deploy/{deploy}
Swap levels by setting its image, as an operator upgrade:
  kubectl -n {ns} set image deployment/{deploy} operator=pgdb-operator:level2-upgrade",
            ns = tests::deploy::NAMESPACE,
            deploy = tests::deploy::DEPLOYMENT,
        );
    } else if args.no_operator {
        println!(
            "No operator runs. Start one as its own process:\n  cargo run -p {} -- --kubeconfig {} --health-addr 127.0.0.1:0",
            level.name(),
            kubeconfig.display()
        );
    } else {
        println!("Running {} (level {}).", level.name(), level.number());
    }
    if let Some((path, _)) = &example {
        println!("Applying {}.", path.display());
    }
    if args.in_cluster {
        println!("Ctrl-C stops everything.\n");
    } else {
        println!(
            "Type `help` and Enter for the operator's controls (stop, kill, start, level N); Ctrl-C stops everything.\n"
        );
    }

    let mut operator = control::Control::new(client.clone());
    if !args.no_operator && !args.in_cluster {
        operator.start(level).await;
    }

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
        tokio::spawn(show::<shared::backup::PostgresDBBackup>(
            client.clone(),
            summarize_backup,
        )),
        tokio::spawn(show_events(client.clone())),
    ];

    let mut hint = None;
    if let Some((_, mut db)) = example {
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
        hint = Some(tokio::spawn(connection_hint(
            client.clone(),
            namespace,
            db.name_any(),
        )));
    }

    if args.in_cluster {
        shared::cli::shutdown_signal().await;
    } else {
        operator.serve_until(shared::cli::shutdown_signal()).await;
    }
    println!("\nStopping the operator and the sandbox.");
    operator.stop().await;
    if let Some(hint) = hint {
        hint.abort();
    }
    for watcher in watchers {
        watcher.abort();
    }
    sandbox.shutdown().await;
    Ok(())
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
        "\n{} Connect (the sandbox's Service addresses are real loopback addresses):\n  PGPASSWORD=$(kubectl -n {namespace} get secret {secret} -o jsonpath='{{.data.password}}' | base64 -d) psql -h {cluster_ip} -U {} {}\n  or, in the clone, with KUBECONFIG set: scripts/psql.sh {name}{}\n",
        now(),
        db.spec.database.owner,
        db.spec.database.name,
        if namespace == "default" {
            String::new()
        } else {
            format!("  (with kubectl's namespace set to {namespace})")
        }
    );
}
