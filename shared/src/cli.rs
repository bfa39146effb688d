//! The command line every level's binary shares.
//!
//! `levelN-xxx` runs the operator against the current kubeconfig (or the
//! in-cluster service account); `levelN-xxx crd` prints the CRDs to pipe into
//! `kubectl apply -f -`. The binaries differ only in the [`Level`] they pass.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::capability::Level;
use crate::error::Error;
use crate::health::{self, Readiness};
use crate::reconcile::error_chain;
use crate::runner::{self, LEASE_NAME, LeaderElection, RunOptions};
use crate::sql::DatabaseAccess;
use crate::telemetry::{self, LogFormat};

/// The shared command line.
#[derive(Debug, Parser)]
#[command(version, about = "A PostgresDB operator level", long_about = None)]
pub struct Cli {
    /// What to do; `run` when absent.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of `run`.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator (the default).
    Run,
    /// Print the CustomResourceDefinitions (PostgresDB, and PostgresDBBackup
    /// which Level 3 serves) as YAML.
    Crd,
}

/// Options of `run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Kubeconfig to use instead of $KUBECONFIG, ~/.kube/config or the in-cluster service account.
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, short = 'n', global = true)]
    pub namespace: Option<String>,
    /// Act only while holding the `pgdb-operator` Lease, so replicas never act at once.
    #[arg(long, global = true)]
    pub leader_elect: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default", global = true)]
    pub lease_namespace: String,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Address of /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080", global = true)]
    pub health_addr: SocketAddr,
    /// How to reach databases for SQL: `auto` is direct to pod IPs inside a
    /// cluster and a port-forward through the API server outside one.
    #[arg(long, value_enum, default_value_t = DatabaseAccess::Auto, global = true)]
    pub database_access: DatabaseAccess,
    /// How often Level 4 and above measure each database for metrics and
    /// insights ("30s", "2m").
    #[arg(long, value_parser = parse_interval, default_value = "30s", global = true)]
    pub metrics_interval: Duration,
    /// How many databases are reconciled at once (one database is never
    /// reconciled twice at once).
    #[arg(long, default_value_t = runner::DEFAULT_MAX_CONCURRENT_RECONCILES, value_parser = clap::value_parser!(u16).range(1..), global = true)]
    pub max_concurrent_reconciles: u16,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let span: jiff::Span = text
        .parse()
        .map_err(|error| format!("{text:?} is not a duration like 30s or 2m: {error}"))?;
    let duration = Duration::try_from(
        span.to_duration(jiff::SpanRelativeTo::days_are_24_hours())
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    if duration < Duration::from_secs(1) {
        return Err(format!("{text:?} is shorter than one second"));
    }
    Ok(duration)
}

/// Parses the command line and runs `level`; the `main` of every level.
pub fn main(level: Level) -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Crd) = cli.command {
        return match crate::crd::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(error) => fail(&error),
        };
    }
    telemetry::init(cli.run.log_format);
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
    match runtime.block_on(run(level, cli.run)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

fn fail(error: &Error) -> ExitCode {
    eprintln!("error: {}", error_chain(error));
    ExitCode::FAILURE
}

async fn run(level: Level, args: RunArgs) -> Result<(), Error> {
    let client = connect(args.kubeconfig.as_deref(), &user_agent(level.name)).await?;
    let readiness = Readiness::default();
    let metrics = level.insights.map(|insights| {
        std::sync::Arc::new(crate::metrics::Metrics::new(Some(insights.database_series)))
    });
    let (_, health) = health::bind(args.health_addr, readiness.clone(), metrics.clone()).await?;
    tokio::spawn(health);
    let instance = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok());
    let holder = format!(
        "{}-{}",
        instance.clone().unwrap_or_else(|| level.name.to_string()),
        std::process::id()
    );
    let operator_namespace = args.lease_namespace.clone();
    let options = RunOptions {
        namespace: args.namespace,
        leader_election: args.leader_elect.then(|| LeaderElection {
            namespace: args.lease_namespace,
            lease_name: LEASE_NAME.to_string(),
            holder,
            ttl: Duration::from_secs(15),
        }),
        readiness,
        leading: Default::default(),
        instance,
        database_access: args.database_access,
        metrics,
        operator_namespace: Some(operator_namespace),
        metrics_interval: Some(args.metrics_interval),
        max_concurrent_reconciles: Some(args.max_concurrent_reconciles),
    };
    tracing::info!(level = level.name, "starting");
    runner::run(level, client, options, shutdown_signal()).await
}

/// The User-Agent a level's requests carry (`level2-upgrade/0.1.0`), so
/// the API server's audit log and metrics tell the operator's requests
/// apart, as client-go's binary-name agent does.
pub fn user_agent(level_name: &str) -> String {
    format!("{level_name}/{}", env!("CARGO_PKG_VERSION"))
}

/// Connects to the cluster as `agent` and checks that it answers.
pub async fn connect(kubeconfig: Option<&std::path::Path>, agent: &str) -> Result<Client, Error> {
    let mut config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(|source| Error::Config {
                detail: format!("cannot read kubeconfig {}", path.display()),
                source: Box::new(source),
            })?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|source| Error::Config { detail: format!("kubeconfig {}", path.display()), source: Box::new(source) })?
        }
        None => Config::infer().await.map_err(|source| Error::Config {
            detail: "no kubeconfig ($KUBECONFIG, ~/.kube/config) and not running in a cluster.\n\nStart a cluster with `kind create cluster` (https://kind.sigs.k8s.io), or pass --kubeconfig".to_string(),
            source: Box::new(source),
        })?,
    };
    let server = config.cluster_url.to_string();
    let agent = http::HeaderValue::from_str(agent).map_err(|source| Error::Config {
        detail: format!("User-Agent {agent:?}"),
        source: Box::new(source),
    })?;
    config.headers.push((http::header::USER_AGENT, agent));
    let client = Client::try_from(config).map_err(|source| Error::Config {
        detail: format!("client for {server}"),
        source: Box::new(source),
    })?;
    match tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await {
        Ok(Ok(version)) => {
            tracing::info!(%server, version = version.git_version, "connected");
            Ok(client)
        }
        Ok(Err(source)) => Err(Error::Unreachable {
            server,
            source: Box::new(source),
        }),
        Err(_) => Err(Error::Unreachable {
            server,
            source: Box::new(kube::Error::Service("no answer within 10 seconds".into())),
        }),
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM (what Kubernetes sends a pod).
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutdown requested");
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_bad_metrics_interval_is_refused_naming_the_flag_and_the_value() {
        let error = Cli::try_parse_from(["level4-insights", "--metrics-interval", "soon"])
            .expect_err("not a duration")
            .to_string();
        assert!(error.contains("--metrics-interval"), "{error}");
        assert!(error.contains("\"soon\" is not a duration"), "{error}");
        let error = Cli::try_parse_from(["level4-insights", "--metrics-interval", "500ms"])
            .expect_err("too short")
            .to_string();
        assert!(error.contains("shorter than one second"), "{error}");
        let cli = Cli::try_parse_from(["level4-insights", "--metrics-interval", "2m"])
            .expect("a duration");
        assert_eq!(cli.run.metrics_interval, Duration::from_secs(120));
    }

    #[test]
    fn concurrent_reconciles_are_bounded_by_default_and_zero_is_refused_naming_the_flag() {
        let cli = Cli::try_parse_from(["level1-install"]).expect("no flags");
        assert_eq!(
            cli.run.max_concurrent_reconciles,
            runner::DEFAULT_MAX_CONCURRENT_RECONCILES
        );
        let error = Cli::try_parse_from(["level1-install", "--max-concurrent-reconciles", "0"])
            .expect_err("zero reconciles nothing")
            .to_string();
        assert!(error.contains("--max-concurrent-reconciles"), "{error}");
        let cli = Cli::try_parse_from(["level1-install", "--max-concurrent-reconciles", "4"])
            .expect("a count");
        assert_eq!(cli.run.max_concurrent_reconciles, 4);
    }

    use super::*;

    #[test]
    fn the_command_line_parses_run_options_and_defaults_to_run() {
        let cli = Cli::try_parse_from(["level1-install", "--namespace", "dbs", "--leader-elect"])
            .expect("parses");
        assert!(cli.command.is_none());
        assert_eq!(cli.run.namespace.as_deref(), Some("dbs"));
        assert!(cli.run.leader_elect);
        let cli = Cli::try_parse_from(["level1-install", "crd"]).expect("parses");
        assert!(matches!(cli.command, Some(Command::Crd)));
    }

    #[tokio::test]
    async fn an_unreachable_cluster_gives_one_clear_error() {
        let dir = std::env::temp_dir().join(format!("pgdb-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("kubeconfig");
        // Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\nusers: [{name: u, user: {}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n",
        )
        .expect("write kubeconfig");
        let Err(error) = connect(Some(&path), "level1-install/0.0.0").await else {
            panic!("nothing listens on 127.0.0.1:9")
        };
        let message = error.to_string();
        assert!(
            message.contains("kind create cluster") && message.contains("127.0.0.1:9"),
            "{message}"
        );
    }
}
