//! A real S3-compatible server for the tests: moto's (`moto_server`, from
//! PyPI's `moto[server]`, which `scripts/install-tools.sh` installs), on a
//! free port of its own, stopped when dropped; and rclone (Debian's, the
//! client the backup Jobs run) to look into it.
//!
//! [`S3Server::start`] accepts any keys. [`S3Server::start_checking_keys`]
//! checks them once it has made the tests' own, so a backup with unknown
//! keys fails as against a real bucket; moto 5 then also refuses some of
//! rclone's correctly signed listings (SignatureDoesNotMatch), so only
//! the refusal is tested against it.
//!
//! It listens on `127.0.0.2`: the sandbox gives pods `127.X.*` addresses
//! with X from 2 up and rewrites `127.0.0.1` in a pod's environment into
//! the pod's own address, so a bucket at `127.0.0.2` is reached by pods
//! and by the test alike.

use std::process::Stdio;
use std::time::Duration;

use super::{Failed, eventually};

/// The address moto listens on.
pub const HOST: &str = "127.0.0.2";
/// How many requests moto serves before it checks credentials: the three
/// IAM calls that make the tests' user, its keys and its policy.
const SETUP_REQUESTS: &str = "3";

/// A running moto S3 server.
pub struct S3Server {
    child: tokio::process::Child,
    endpoint: String,
    port: u16,
    access_key: String,
    secret_key: String,
}

/// `text` percent-encoded for a form body.
fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The text of the first `<tag>` of an XML answer.
fn xml_field(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(xml[start..end].to_string())
}

impl S3Server {
    /// Starts moto on a free port, accepting any keys; panics, saying how
    /// to install it, when moto_server or rclone is missing.
    pub async fn start() -> Self {
        Self::launch(false).await
    }

    /// Starts moto checking credentials: only the keys it made
    /// ([`S3Server::access_key`]) are known.
    pub async fn start_checking_keys() -> Self {
        Self::launch(true).await
    }

    async fn launch(check_keys: bool) -> Self {
        let moto = crate::tools::find("moto_server").unwrap_or_else(|| {
            panic!("this test needs moto's S3 server (moto_server) and rclone: run scripts/install-tools.sh")
        });
        assert!(
            crate::tools::find("rclone").is_some(),
            "this test needs rclone: run scripts/install-tools.sh (Debian: apt-get install rclone)"
        );
        let port = std::net::TcpListener::bind((HOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free port on {HOST}: {e}"));
        let mut command = tokio::process::Command::new(moto);
        command.args(["-H", HOST, "-p", &port.to_string()]);
        if check_keys {
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", SETUP_REQUESTS);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start moto_server: {e}"));
        let mut server = Self {
            child,
            endpoint: format!("http://{HOST}:{port}"),
            port,
            access_key: "pgdb-test-access".into(),
            secret_key: "pgdb-test-secret".into(),
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
        if !check_keys {
            return server;
        }
        // The tests' user, its keys, and a policy letting it do anything
        // in S3; from then on moto checks every request's signature.
        server.iam("Action=CreateUser&UserName=pgdb-tests").await;
        let keys = server
            .iam("Action=CreateAccessKey&UserName=pgdb-tests")
            .await;
        server.access_key =
            xml_field(&keys, "AccessKeyId").unwrap_or_else(|| panic!("no key in {keys}"));
        server.secret_key =
            xml_field(&keys, "SecretAccessKey").unwrap_or_else(|| panic!("no secret in {keys}"));
        let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
        server
            .iam(&format!(
                "Action=PutUserPolicy&UserName=pgdb-tests&PolicyName=s3&PolicyDocument={}",
                form_encode(policy)
            ))
            .await;
        server
    }

    /// One IAM call, made while moto does not check credentials yet; its
    /// answer's body.
    async fn iam(&self, query: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let body = format!("{query}&Version=2010-05-08");
        let request = format!(
            "POST / HTTP/1.1\r\nHost: {HOST}:{}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=setup/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        );
        let mut stream = tokio::net::TcpStream::connect((HOST, self.port))
            .await
            .unwrap_or_else(|e| panic!("cannot reach moto: {e}"));
        stream
            .write_all(request.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("cannot write to moto: {e}"));
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .await
            .unwrap_or_else(|e| panic!("cannot read moto's answer: {e}"));
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "IAM {query} failed: {answer}"
        );
        answer
    }

    /// The access key moto accepts.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// Its secret key.
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// Its URL (`http://127.0.0.2:PORT`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Runs rclone against the server with the test keys; its stdout, or
    /// what it said when it failed.
    pub async fn rclone(&self, args: &[&str]) -> Result<String, Failed> {
        let output = tokio::process::Command::new(
            crate::tools::find("rclone").unwrap_or_else(|| "rclone".into()),
        )
        .args(args)
        // A CA bundle of the machine's (for a proxy) would be applied to
        // moto's plain HTTP and fail; the Jobs run without it.
        .env_remove("AWS_CA_BUNDLE")
        .env("RCLONE_CONFIG_S3_TYPE", "s3")
        .env("RCLONE_CONFIG_S3_PROVIDER", "Other")
        .env("RCLONE_CONFIG_S3_ENDPOINT", &self.endpoint)
        .env("RCLONE_CONFIG_S3_REGION", "us-east-1")
        .env("RCLONE_CONFIG_S3_FORCE_PATH_STYLE", "true")
        .env("RCLONE_CONFIG_S3_ACCESS_KEY_ID", &self.access_key)
        .env("RCLONE_CONFIG_S3_SECRET_ACCESS_KEY", &self.secret_key)
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
