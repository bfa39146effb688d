//! A real S3-compatible server for the tests: moto's (`moto_server`, from
//! PyPI's `moto[server]`, which `scripts/install-tools.sh` installs), on a
//! free port of its own, stopped when dropped; and rclone (Debian's, the
//! client the backup Jobs run) to look into it.
//!
//! It listens on `127.0.0.2`: the sandbox gives pods `127.X.*` addresses
//! with X from 2 up and rewrites `127.0.0.1` in a pod's environment into
//! the pod's own address, so a bucket at `127.0.0.2` is reached by pods
//! and by the test alike.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use super::{Failed, eventually};

/// The address moto listens on.
pub const HOST: &str = "127.0.0.2";
/// The keys the tests' Secrets carry (moto accepts any).
pub const ACCESS_KEY: &str = "pgdb-test-access";
/// The secret key paired with [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "pgdb-test-secret";

/// A running moto S3 server.
pub struct S3Server {
    child: tokio::process::Child,
    endpoint: String,
}

fn tools_bin() -> PathBuf {
    let tools = std::env::var("PGDB_TOOLS_DIR").unwrap_or_else(|_| {
        format!(
            "{}/.cache/pgdb-operator/tools",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    PathBuf::from(tools).join("bin")
}

/// `program` on PATH, else in the tools directory install-tools.sh fills.
fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(std::iter::once(tools_bin()))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

impl S3Server {
    /// Starts moto on a free port; panics, saying how to install it, when
    /// moto_server or rclone is missing.
    pub async fn start() -> Self {
        let moto = find("moto_server").unwrap_or_else(|| {
            panic!("this test needs moto's S3 server (moto_server) and rclone: run scripts/install-tools.sh")
        });
        assert!(
            find("rclone").is_some(),
            "this test needs rclone: run scripts/install-tools.sh (Debian: apt-get install rclone)"
        );
        let port = std::net::TcpListener::bind((HOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free port on {HOST}: {e}"));
        let child = tokio::process::Command::new(moto)
            .args(["-H", HOST, "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start moto_server: {e}"));
        let server = Self {
            child,
            endpoint: format!("http://{HOST}:{port}"),
        };
        let up = eventually(
            Duration::from_secs(30),
            "moto's S3 server answers",
            || async {
                Ok(tokio::net::TcpStream::connect((HOST, port))
                    .await
                    .ok()
                    .map(|_| ()))
            },
        )
        .await;
        if let Err(failed) = up {
            panic!("{failed}");
        }
        server
    }

    /// Its URL (`http://127.0.0.2:PORT`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Runs rclone against the server with the test keys; its stdout, or
    /// what it said when it failed.
    pub async fn rclone(&self, args: &[&str]) -> Result<String, Failed> {
        let output =
            tokio::process::Command::new(find("rclone").unwrap_or_else(|| "rclone".into()))
                .args(args)
                // A CA bundle of the machine's (for a proxy) would be applied to
                // moto's plain HTTP and fail; the Jobs run without it.
                .env_remove("AWS_CA_BUNDLE")
                .env("RCLONE_CONFIG_S3_TYPE", "s3")
                .env("RCLONE_CONFIG_S3_PROVIDER", "Other")
                .env("RCLONE_CONFIG_S3_ENDPOINT", &self.endpoint)
                .env("RCLONE_CONFIG_S3_REGION", "us-east-1")
                .env("RCLONE_CONFIG_S3_FORCE_PATH_STYLE", "true")
                .env("RCLONE_CONFIG_S3_ACCESS_KEY_ID", ACCESS_KEY)
                .env("RCLONE_CONFIG_S3_SECRET_ACCESS_KEY", SECRET_KEY)
                .output()
                .await
                .map_err(|e| Failed::new(format!("cannot run rclone: {e}")))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(Failed::new(format!(
                "rclone {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            )))
        }
    }

    /// Creates a bucket.
    pub async fn create_bucket(&self, bucket: &str) -> Result<(), Failed> {
        self.rclone(&["mkdir", &format!("s3:{bucket}")])
            .await
            .map(|_| ())
    }

    /// Every object's key under `path` of `bucket` (recursively).
    pub async fn list(&self, bucket: &str, path: &str) -> Result<Vec<String>, Failed> {
        let listed = self
            .rclone(&["lsf", "-R", "--files-only", &format!("s3:{bucket}/{path}")])
            .await?;
        Ok(listed.lines().map(str::to_string).collect())
    }

    /// An object's content.
    pub async fn read(&self, bucket: &str, key: &str) -> Result<Vec<u8>, Failed> {
        self.rclone(&["cat", &format!("s3:{bucket}/{key}")])
            .await
            .map(String::into_bytes)
    }

    /// Stops the server.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
