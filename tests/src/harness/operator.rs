//! An operator the harness started: in-process or as its binary, stopped
//! gracefully (checking that it exited cleanly) or killed. A binary's
//! output is kept for [`super::logs`] when capture is on.

use std::path::PathBuf;

use tokio::sync::oneshot;

use super::{WAIT, logs};

/// An operator the harness started.
pub enum Operator {
    /// Running in this process.
    InProcess {
        /// Stops it.
        stop: Option<oneshot::Sender<()>>,
        /// Its task.
        task: tokio::task::JoinHandle<Result<(), shared::Error>>,
        /// The instance name its Events carry (`reportingInstance`).
        instance: String,
    },
    /// Running as a child process.
    Process {
        /// The process.
        child: tokio::process::Child,
        /// Where its output goes.
        log: PathBuf,
    },
}

impl Operator {
    /// The instance name an in-process operator's Events carry.
    pub fn instance(&self) -> Option<&str> {
        match self {
            Operator::InProcess { instance, .. } => Some(instance),
            Operator::Process { .. } => None,
        }
    }

    /// What a binary wrote to stdout and stderr so far (`None` in-process).
    pub fn output(&self) -> Option<std::io::Result<String>> {
        match self {
            Operator::InProcess { .. } => None,
            Operator::Process { log, .. } => Some(std::fs::read_to_string(log)),
        }
    }

    /// Stops the operator gracefully (SIGTERM for a process) and checks
    /// that it exited cleanly.
    pub async fn stop(self) {
        match self {
            Operator::InProcess { mut stop, task, .. } => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
                match tokio::time::timeout(WAIT, task).await {
                    Ok(Ok(Ok(()))) => {}
                    other => panic!("the operator did not stop cleanly: {other:?}"),
                }
            }
            Operator::Process { mut child, log } => {
                if let Some(pid) = child.id() {
                    let _ = tokio::process::Command::new("kill")
                        .args(["-TERM", &pid.to_string()])
                        .status()
                        .await;
                }
                let status = tokio::time::timeout(WAIT, child.wait()).await;
                let output = std::fs::read_to_string(&log).unwrap_or_default();
                logs::keep_output(format!("the output of {}", log.display()), output.clone());
                assert!(
                    matches!(status, Ok(Ok(s)) if s.success()),
                    "the operator binary did not exit cleanly on SIGTERM: {status:?}\nits output ({}):\n{output}",
                    log.display()
                );
                let _ = std::fs::remove_file(&log);
            }
        }
    }

    /// Stops the operator abruptly, as a crash or a killed pod would.
    pub async fn kill(self) {
        match self {
            Operator::InProcess { task, .. } => {
                task.abort();
                let _ = task.await;
            }
            Operator::Process { mut child, log } => {
                let _ = child.kill().await;
                if logs::capturing() {
                    let output = std::fs::read_to_string(&log).unwrap_or_default();
                    logs::keep_output(format!("the output of {}", log.display()), output);
                }
                let _ = std::fs::remove_file(&log);
            }
        }
    }
}
