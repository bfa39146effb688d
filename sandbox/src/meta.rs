//! Object metadata rules every resource shares.
//!
//! Names are DNS-1123 subdomains (most kinds) or labels (namespaces,
//! services); the server, not the client, sets `uid`, `creationTimestamp`,
//! `resourceVersion` and `generation`; `generateName` asks the server to
//! append a random suffix.

use serde_json::Value;

use crate::error::Cause;

pub fn now() -> String {
    // RFC 3339 with second precision, as metav1.Time serializes.
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A random version-4 UUID.
pub fn uid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The 5-character suffix `generateName` gets (upstream's alphabet avoids
/// vowels and look-alike characters so no words are spelled).
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

pub const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
pub const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
pub const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

/// Checks `metadata.name` the way the kind's validation does.
pub fn validate_name(plural: &str, name: &str) -> Option<Cause> {
    let v = Value::String(name.to_string());
    let (ok, msg) = match plural {
        "namespaces" => (is_label(name), LABEL_MSG),
        // RBAC objects' names are path segments (`system:discovery`),
        // upstream's ValidatePathSegmentName.
        "roles" | "clusterroles" | "rolebindings" | "clusterrolebindings" => (
            !matches!(name, "." | "..") && !name.contains(['/', '%']),
            "may not be '.' or '..' and may not contain '/' or '%'",
        ),
        "services" => (
            is_label(name) && name.as_bytes()[0].is_ascii_lowercase(),
            DNS1035_MSG,
        ),
        _ => (
            name.len() <= 253 && name.split('.').all(is_label),
            SUBDOMAIN_MSG,
        ),
    };
    if ok {
        None
    } else if name.len() > 253 {
        Some(Cause::invalid(
            "metadata.name",
            &v,
            "must be no more than 253 characters",
        ))
    } else {
        Some(Cause::invalid("metadata.name", &v, msg))
    }
}

/// Label keys and values, which the real server also validates.
pub fn validate_labels(obj: &Value) -> Vec<Cause> {
    let mut causes = vec![];
    let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) else {
        return causes;
    };
    for (k, v) in labels {
        let name = k.rsplit('/').next().unwrap_or_default();
        let name_ok = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !name_ok {
            causes.push(Cause::invalid(
                "metadata.labels",
                &Value::String(k.clone()),
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            ));
        }
        match v.as_str() {
            Some(s)
                if s.is_empty()
                    || (s.len() <= 63
                        && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
                        && s.ends_with(|c: char| c.is_ascii_alphanumeric())) => {}
            _ => causes.push(Cause::invalid(
                format!("metadata.labels.{k}"),
                v,
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            )),
        }
    }
    causes
}

pub fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

pub fn namespace_of(obj: &Value) -> &str {
    obj.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

pub fn uid_of(obj: &Value) -> &str {
    obj.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `metadata`, created if missing.
pub fn meta_mut(obj: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Default::default());
    }
    let o = obj.as_object_mut().expect("made an object just above");
    let m = o
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    if !m.is_object() {
        *m = Value::Object(Default::default());
    }
    m.as_object_mut().expect("made an object just above")
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

pub fn is_deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}
