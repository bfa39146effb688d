//! Looking for generated passwords where they must never be: logs.
//!
//! The operators generate every database's passwords and keep them only in
//! Secrets; the chapters promise they are never logged. These helpers read
//! every password a cluster's Secrets hold, every pod log the API serves,
//! and report each line where a password appears, as itself or as the
//! base64 a Secret carries it in. The behaviour suite scans the captured
//! logs of every scenario run ([`crate::harness::logs`]); a dedicated test
//! scans a real-PostgreSQL life of Level 2's binary.

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{ListParams, LogParams};

use crate::harness::{Failed, OrFail, TestCluster};

/// A generated password and where it came from.
#[derive(Clone, Debug)]
pub struct Password {
    /// The Secret holding it, and the run that made it when several did.
    pub origin: String,
    /// The password itself.
    pub value: String,
}

/// Every password the namespace's Secrets hold (their `password` key).
pub async fn passwords(cluster: &TestCluster) -> Result<Vec<Password>, Failed> {
    let mut found = Vec::new();
    for secret in cluster
        .api::<Secret>()
        .list(&ListParams::default())
        .await
        .or_fail("list the Secrets")?
        .items
    {
        if let Some(password) = secret.data.as_ref().and_then(|d| d.get("password")) {
            found.push(Password {
                origin: format!("Secret {}", secret.name_any()),
                value: String::from_utf8_lossy(&password.0).into_owned(),
            });
        }
    }
    Ok(found)
}

/// Every pod's log the API serves, by pod and container. A container that
/// never started has none (the API answers 400), and a pod deleted since
/// the listing has none left (404); any other failure fails.
pub async fn pod_logs(cluster: &TestCluster) -> Result<Vec<(String, String)>, Failed> {
    let pods = cluster.api::<Pod>();
    let mut logs = Vec::new();
    for pod in pods
        .list(&ListParams::default())
        .await
        .or_fail("list the pods")?
        .items
    {
        let name = pod.name_any();
        for container in pod.spec.iter().flat_map(|s| &s.containers) {
            let params = LogParams {
                container: Some(container.name.clone()),
                ..Default::default()
            };
            match pods.logs(&name, &params).await {
                Ok(log) => logs.push((format!("pod {name} container {}", container.name), log)),
                Err(kube::Error::Api(status)) if matches!(status.code, 400 | 404) => {}
                Err(error) => {
                    return Err(Failed::new(format!(
                        "failed to read the log of pod {name} container {}: {error}",
                        container.name
                    )));
                }
            }
        }
    }
    Ok(logs)
}

/// Standard base64 with padding, as a Secret's `data` carries a value.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                text.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                text.push('=');
            }
        }
    }
    text
}

/// Where (log, line number, the line with the password masked) any
/// password appears, as itself or as base64.
pub fn leaks(passwords: &[Password], logs: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for password in passwords {
        let encoded = base64(password.value.as_bytes());
        for (log, text) in logs {
            for (n, line) in text.lines().enumerate() {
                if line.contains(password.value.as_str()) || line.contains(&encoded) {
                    let masked = line
                        .replace(password.value.as_str(), "<password>")
                        .replace(&encoded, "<password in base64>");
                    found.push(format!(
                        "the password of {} in {log}, line {}: {masked}",
                        password.origin,
                        n + 1
                    ));
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_encodes_as_a_secret_does() {
        assert_eq!(base64(b"pgdb"), "cGdkYg==");
        assert_eq!(base64(b"orders"), "b3JkZXJz");
        assert_eq!(base64(b"order"), "b3JkZXI=");
    }

    #[test]
    fn a_password_is_found_as_itself_and_as_base64_with_its_line() {
        let passwords = [Password {
            origin: "Secret orders-credentials".into(),
            value: "s3cret-pw".into(),
        }];
        let logs = [(
            "the log".to_string(),
            format!(
                "fine\nconnecting with s3cret-pw\n{}\n",
                base64(b"s3cret-pw")
            ),
        )];
        let found = leaks(&passwords, &logs);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].ends_with("the log, line 2: connecting with <password>"),
            "{found:?}"
        );
    }
}
