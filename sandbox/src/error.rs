//! Errors, and how they reach a client.
//!
//! The Kubernetes API server answers every failure with a `Status` object:
//! `{"kind":"Status","apiVersion":"v1","status":"Failure","message":...,
//! "reason":...,"details":...,"code":...}`. Clients branch on `reason` and
//! `code` (kube-rs's `ErrorResponse`, kubectl's `Error from server (NotFound)`),
//! so the sandbox builds its API failures with the same constructors the real
//! server's `k8s.io/apimachinery/pkg/api/errors` package offers.

use serde_json::{Value, json};

/// The crate's one error type: API failures that become `Status` answers, and
/// the few things that can go wrong while starting or stopping a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request the API server refuses; sent to the client as a `Status`.
    #[error("{} ({}): {}", .0.code, .0.reason, .0.message)]
    Api(Box<ApiStatus>),
    #[error("could not listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not write the kubeconfig to {path}")]
    WriteKubeconfig {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not render the kubeconfig")]
    Kubeconfig(#[source] serde_yaml::Error),
    #[error("failed to start the controllers' thread")]
    Controllers(#[source] std::io::Error),
    #[error("could not build a kube client for the sandbox")]
    Client(#[source] kube::Error),
    /// The sandbox's credentials (CA, serving certificate, TLS, the
    /// default RBAC policy) could not be made.
    #[error("failed to {action}")]
    Credentials {
        action: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The real-PostgreSQL runtime could not set up (work directory, processes).
    #[error("PostgreSQL runtime: {what}")]
    Runtime {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The fields of a failure `Status` object.
#[derive(Debug, Clone)]
pub struct ApiStatus {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiStatus {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

/// One `StatusCause`: the field path and what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    pub reason: &'static str,
    pub field: String,
    pub message: String,
}

impl Cause {
    /// `field: Invalid value: <value>: <detail>`, the most common cause.
    pub fn invalid(field: impl Into<String>, value: &Value, detail: impl AsRef<str>) -> Cause {
        Cause {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!(
                "Invalid value: {}: {}",
                render_value(value),
                detail.as_ref()
            ),
        }
    }
    pub fn required(field: impl Into<String>, detail: &str) -> Cause {
        let message = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        Cause {
            reason: "FieldValueRequired",
            field: field.into(),
            message,
        }
    }
    pub fn not_supported(field: impl Into<String>, value: &Value, allowed: &[Value]) -> Cause {
        let list: Vec<String> = allowed.iter().map(render_value).collect();
        Cause {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                render_value(value),
                list.join(", ")
            ),
        }
    }
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueForbidden",
            field: field.into(),
            message: format!("Forbidden: {detail}"),
        }
    }
    /// How the real server prints a cause inside the Status message.
    fn render(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}

/// Values appear in messages the way Go's `%#v`-ish printer shows them:
/// strings quoted, numbers bare.
pub fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".into(),
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => other.to_string(),
    }
}

/// A "group resource" as the real server qualifies it in messages:
/// `pods`, `statefulsets.apps`.
pub fn qualified(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

fn details(group: &str, kind: &str, name: &str) -> Value {
    let mut d = json!({});
    if !name.is_empty() {
        d["name"] = json!(name);
    }
    if !group.is_empty() {
        d["group"] = json!(group);
    }
    if !kind.is_empty() {
        d["kind"] = json!(kind);
    }
    d
}

impl Error {
    fn api(code: u16, reason: &'static str, message: String, details: Option<Value>) -> Error {
        Error::Api(Box::new(ApiStatus {
            code,
            reason,
            message,
            details,
        }))
    }

    /// The Status this error is answered with.
    pub fn status(&self) -> ApiStatus {
        match self {
            Error::Api(s) => (**s).clone(),
            other => ApiStatus {
                code: 500,
                reason: "InternalError",
                message: format!("Internal error occurred: {other}"),
                details: None,
            },
        }
    }

    pub fn code(&self) -> u16 {
        self.status().code
    }

    pub fn not_found(group: &str, plural: &str, name: &str) -> Error {
        Error::api(
            404,
            "NotFound",
            format!("{} {name:?} not found", qualified(group, plural)),
            Some(details(group, plural, name)),
        )
    }
    /// The answer for a path the server does not serve at all.
    pub fn no_such_resource() -> Error {
        Error::api(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
            Some(json!({})),
        )
    }
    pub fn already_exists(group: &str, plural: &str, name: &str) -> Error {
        Error::api(
            409,
            "AlreadyExists",
            format!("{} {name:?} already exists", qualified(group, plural)),
            Some(details(group, plural, name)),
        )
    }
    /// Optimistic concurrency: the object changed since the client read it.
    pub fn conflict(group: &str, plural: &str, name: &str) -> Error {
        Error::api(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
                qualified(group, plural)
            ),
            Some(details(group, plural, name)),
        )
    }
    pub fn conflict_with(group: &str, plural: &str, name: &str, msg: &str) -> Error {
        Error::api(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: {msg}",
                qualified(group, plural)
            ),
            Some(details(group, plural, name)),
        )
    }
    /// Server-side apply conflicts: one cause per conflicting field.
    pub fn apply_conflicts(conflicts: &[(String, String)], api_version: &str) -> Error {
        // Upstream's message: `Apply failed with N conflict(s): conflict with "m" using v1: .a.b`
        let n = conflicts.len();
        let mut message = format!(
            "Apply failed with {n} conflict{}: ",
            if n == 1 { "" } else { "s" }
        );
        let parts: Vec<String> = conflicts
            .iter()
            .map(|(manager, field)| {
                format!("conflict with {manager:?} using {api_version}: {field}")
            })
            .collect();
        message.push_str(&parts.join("\n"));
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(manager, field)| {
                json!({"reason": "FieldManagerConflict", "message": format!("conflict with {manager:?} using {api_version}"), "field": field})
            })
            .collect();
        Error::api(409, "Conflict", message, Some(json!({ "causes": causes })))
    }
    /// 422 Invalid: `Kind.group "name" is invalid: field: Invalid value: ...`.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Error {
        let qualified_kind = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let rendered: Vec<String> = causes.iter().map(Cause::render).collect();
        let list = if rendered.len() == 1 {
            rendered[0].clone()
        } else {
            format!("[{}]", rendered.join(", "))
        };
        let mut d = details(group, kind, name);
        d["causes"] = Value::Array(
            causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect(),
        );
        Error::api(
            422,
            "Invalid",
            format!("{qualified_kind} {name:?} is invalid: {list}"),
            Some(d),
        )
    }
    /// 422 without causes, e.g. a JSON patch whose `test` operation failed.
    pub fn unprocessable(message: String) -> Error {
        Error::api(422, "Invalid", message, None)
    }
    pub fn bad_request(message: impl Into<String>) -> Error {
        Error::api(400, "BadRequest", message.into(), None)
    }
    pub fn forbidden(group: &str, plural: &str, name: &str, msg: &str) -> Error {
        Error::api(
            403,
            "Forbidden",
            format!("{} {name:?} is forbidden: {msg}", qualified(group, plural)),
            Some(details(group, plural, name)),
        )
    }
    /// A resourceVersion older than the watch history window.
    pub fn expired(message: String) -> Error {
        Error::api(410, "Expired", message, None)
    }
    pub fn gone(message: String) -> Error {
        Error::api(410, "Gone", message, None)
    }
    pub fn method_not_allowed() -> Error {
        Error::api(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".into(),
            Some(json!({})),
        )
    }
    pub fn unsupported_media_type(content_type: &str) -> Error {
        Error::api(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {content_type:?})"
            ),
            None,
        )
    }
    pub fn too_large(limit: usize) -> Error {
        Error::api(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
            None,
        )
    }
    /// A fault injected by a test: any status code, reason derived from it.
    pub fn injected(code: u16) -> Error {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            409 => "Conflict",
            410 => "Gone",
            422 => "Invalid",
            429 => "TooManyRequests",
            504 => "Timeout",
            503 => "ServiceUnavailable",
            _ => "InternalError",
        };
        Error::api(
            code,
            reason,
            format!("injected fault: {code} {reason}"),
            None,
        )
    }
    pub fn internal(message: impl Into<String>) -> Error {
        Error::api(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
            None,
        )
    }
}
