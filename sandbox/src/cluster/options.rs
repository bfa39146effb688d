//! The parameters of a write, a delete or a list that do not belong to the
//! object: which part of it a request addresses, the patch format, the
//! field manager, dry runs, propagation and preconditions, selectors and
//! paging. Parsing them from a request is the HTTP server's; using them is
//! the write path's.

use crate::selector::{FieldSelector, LabelSelector};

/// Which part of an object a request addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    Main,
    Status,
}

impl Sub {
    /// The subresource's name in field ownership records.
    pub(super) fn name(self) -> &'static str {
        match self {
            Sub::Main => "",
            Sub::Status => "status",
        }
    }
}

/// The four PATCH content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Json,
    Merge,
    Strategic,
    Apply,
}

/// Parameters of a write that do not belong to the object.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub manager: String,
    pub force: bool,
    pub dry_run: bool,
}

impl WriteOptions {
    pub fn manager(m: &str) -> WriteOptions {
        WriteOptions {
            manager: m.into(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub propagation: Option<String>,
    pub grace_period: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

/// The field manager a request without `fieldManager` is recorded under:
/// its user agent up to the first `/`, as upstream does.
pub fn manager_from_user_agent(ua: &str) -> String {
    let m = ua.split('/').next().unwrap_or_default();
    if m.is_empty() {
        "unknown".into()
    } else {
        m.chars().take(128).collect()
    }
}
