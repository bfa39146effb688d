//! `pgdb-sandbox`: run the embedded control plane as a standalone server.
//!
//! It writes a kubeconfig for kubectl and the operators (the HTTPS
//! listener, its CA and the admin user's token) and serves until
//! interrupted.

use std::path::PathBuf;

use clap::Parser;
use sandbox::{RuntimeKind, Sandbox, SandboxConfig};

/// An embedded Kubernetes control plane: no cluster, no Docker.
#[derive(Parser)]
#[command(name = "pgdb-sandbox", version)]
struct Args {
    /// Where to write the kubeconfig (default: ./sandbox.kubeconfig).
    #[arg(long, env = "SANDBOX_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// What runs pods: real PostgreSQL processes, the simulated runtime,
    /// or (auto) real ones when PostgreSQL server binaries are installed.
    #[arg(long, value_enum, default_value_t = RuntimeKind::Auto)]
    runtime: RuntimeKind,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let path = args
        .kubeconfig
        .clone()
        .unwrap_or_else(|| PathBuf::from("sandbox.kubeconfig"));
    let sandbox = match Sandbox::start(SandboxConfig {
        port: args.port,
        runtime_kind: args.runtime,
        ..Default::default()
    })
    .await
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pgdb-sandbox: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Err(e) = sandbox.write_kubeconfig(&path) {
        eprintln!("pgdb-sandbox: {e}");
        return std::process::ExitCode::FAILURE;
    }
    if args.kubeconfig.is_none() {
        println!(
            "No --kubeconfig given; wrote the default {}",
            path.display()
        );
    }
    let p = path.display();
    println!(
        "Sandbox control plane serving at {} (the kubeconfig's, with its CA and the admin token) and {}",
        sandbox.https_url(),
        sandbox.url()
    );
    println!("{}", sandbox.runtime_description());
    println!("Kubeconfig: {p}");
    println!();
    println!("  KUBECONFIG={p} kubectl get pods -A");
    println!("  cargo run -p level1-install -- --kubeconfig {p}");
    println!();
    println!(
        "A second operator beside the first needs its own health port: add --health-addr 127.0.0.1:0 (8080 is the default)."
    );
    println!();
    println!("Press Ctrl-C to stop.");
    stop_requested().await;
    println!("stopping");
    sandbox.shutdown().await;
    std::process::ExitCode::SUCCESS
}

/// Ctrl-C, or SIGTERM (`kill`, a script's cleanup): either stops the pods'
/// processes before the sandbox exits.
async fn stop_requested() {
    let interrupt = tokio::signal::ctrl_c();
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
