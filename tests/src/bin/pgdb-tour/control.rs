//! The operator's controls in the tour: commands typed on its standard
//! input stop, kill, start or swap the operator while the sandbox, and
//! every database in it, keeps running.
//!
//! A level with insights (Level 4) also serves its metrics at `/metrics`
//! on a local port, as its binary does, and says where.
//!
//! The operator runs in the tour's process, so `kill` aborts its task: no
//! reconcile finishes and nothing is cleaned up, as when a process is
//! killed. An operator started as its own process (`--no-operator`) is
//! stopped and killed with the shell's own means (Ctrl-C, `kill -9`).

use std::future::Future;
use std::net::SocketAddr;

use kube::Client;
use shared::health::Readiness;
use shared::reconcile::error_chain;
use shared::runner::{self, RunOptions};
use tests::course::{METRICS_INTERVAL, METRICS_VARIABLE, serve_metrics};
use tests::levels::LevelId;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::watch::now;

const HELP: &str = "\
Commands (type one and Enter):
  stop       stop the operator gracefully (its reconcile finishes)
  kill       kill the operator (no reconcile finishes, nothing cleaned up)
  start [N]  start the operator again, of level N (default: the last one)
  level N    swap the operator for level N (stop, then start level N)
  status     which operator runs
  help       this list
Ctrl-C stops the operator and the sandbox.";

/// An operator running in the tour's process.
struct Running {
    level: LevelId,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), shared::Error>>,
    /// Its `/metrics` server, for a level with insights.
    metrics: Option<JoinHandle<()>>,
}

impl Running {
    /// Its `/metrics` server stops with it.
    fn stop_serving(&self) {
        if let Some(server) = &self.metrics {
            server.abort();
        }
    }
}

/// The operator the tour controls, if one runs.
pub struct Control {
    client: Client,
    running: Option<Running>,
    last: Option<LevelId>,
    /// Where a level with insights serves `/metrics`: a free port the
    /// first time, the same one after a restart.
    metrics_address: SocketAddr,
}

impl Control {
    /// No operator runs yet.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            running: None,
            last: None,
            metrics_address: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }

    /// Starts `level`, unless an operator runs already. A level with
    /// insights serves its metrics at `/metrics`, as its binary does, and
    /// measures every [`METRICS_INTERVAL`].
    pub async fn start(&mut self, level: LevelId) {
        if let Some(running) = &self.running {
            println!(
                "{} operator: {} runs already; `stop` or `kill` it first, or `level {}`",
                now(),
                running.level.name(),
                level.number()
            );
            return;
        }
        let built = level.build();
        let served = match serve_metrics(&built, self.metrics_address, Readiness::default()).await {
            Ok(served) => served,
            Err(error) => {
                println!(
                    "{} operator: {} not started: {}",
                    now(),
                    level.name(),
                    error_chain(&error)
                );
                return;
            }
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let options = RunOptions {
            readiness: Readiness::default(),
            metrics: served.as_ref().map(|s| s.metrics.clone()),
            metrics_interval: Some(METRICS_INTERVAL),
            ..Default::default()
        };
        let task = tokio::spawn(runner::run(
            built,
            self.client.clone(),
            options,
            async move {
                let _ = stopped.await;
            },
        ));
        println!(
            "{} operator: {} (level {}) started",
            now(),
            level.name(),
            level.number()
        );
        if let Some(served) = &served {
            self.metrics_address = served.address;
            println!(
                "{} operator: metrics at http://{}/metrics, each database measured every {:?}; in another terminal:\n  export {METRICS_VARIABLE}={}\n  curl -s http://${METRICS_VARIABLE}/metrics | grep ^pgdb_",
                now(),
                served.address,
                METRICS_INTERVAL,
                served.address
            );
        }
        self.running = Some(Running {
            level,
            stop,
            task,
            metrics: served.map(|s| s.server),
        });
        self.last = Some(level);
    }

    /// Stops the operator gracefully and waits for it.
    pub async fn stop(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        running.stop_serving();
        let _ = running.stop.send(());
        match running.task.await {
            Ok(Ok(())) => println!("{} operator: {} stopped", now(), running.level.name()),
            Ok(Err(error)) => println!(
                "{} operator: {} stopped with an error: {}",
                now(),
                running.level.name(),
                error_chain(&error)
            ),
            Err(error) => println!("{} operator: its task failed: {error}", now()),
        }
    }

    /// Aborts the operator's task, as a killed process ends.
    pub async fn kill(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        running.stop_serving();
        running.task.abort();
        let _ = running.task.await;
        println!("{} operator: {} killed", now(), running.level.name());
    }

    /// Obeys the commands typed on standard input until `signal` completes.
    /// When standard input closes, the operator keeps running until then.
    pub async fn serve_until(&mut self, signal: impl Future<Output = ()>) {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        let mut input_open = true;
        tokio::pin!(signal);
        loop {
            let line = tokio::select! {
                () = &mut signal => return,
                line = lines.next_line(), if input_open => line,
            };
            match line {
                Ok(Some(line)) => self.obey(line.trim()).await,
                Ok(None) | Err(_) => input_open = false,
            }
        }
    }

    async fn obey(&mut self, command: &str) {
        let mut words = command.split_whitespace();
        let verb = words.next().unwrap_or_default();
        let number = words
            .next()
            .map(|n| n.parse::<u8>().map_err(|_| n.to_string()));
        let level = match number {
            None => None,
            Some(Ok(n)) => match crate::level_of(n) {
                Ok(level) => Some(level),
                Err(message) => return println!("{message}"),
            },
            Some(Err(word)) => return println!("`{word}` is not a level number"),
        };
        match verb {
            "" => {}
            "stop" => self.stop_or_say().await,
            "kill" => {
                if self.running.is_none() {
                    println!("no operator runs");
                }
                self.kill().await;
            }
            "start" => match level.or(self.last) {
                Some(level) => self.start(level).await,
                None => println!("which level? `start 1` or `start 4`"),
            },
            "level" => match level {
                Some(level) => {
                    self.stop().await;
                    self.start(level).await;
                }
                None => println!("which level? `level 1` or `level 4`"),
            },
            "status" => match &self.running {
                Some(running) => println!(
                    "{} (level {}) runs",
                    running.level.name(),
                    running.level.number()
                ),
                None => println!("no operator runs in the tour"),
            },
            "help" | "?" => println!("{HELP}"),
            other => println!("unknown command `{other}`\n{HELP}"),
        }
    }

    async fn stop_or_say(&mut self) {
        if self.running.is_none() {
            println!("no operator runs");
        }
        self.stop().await;
    }
}
