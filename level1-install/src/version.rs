//! PostgreSQL versions as users write them, and the image each one runs.
//!
//! `spec.version` is a major ("16", the newest 16.x) or a major and minor
//! ("16.4"); either is a tag of the official `postgres` image. Only majors
//! the operator knows how to run are accepted: guessing at an unknown one
//! would start a server the operator cannot vouch for.

use std::fmt;

/// The major versions this operator runs.
pub const SUPPORTED_MAJORS: [u32; 5] = [14, 15, 16, 17, 18];

/// A parsed `spec.version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PgVersion {
    /// The major version (16).
    pub major: u32,
    /// The minor version (4), when pinned.
    pub minor: Option<u32>,
}

impl PgVersion {
    /// Parses "16" or "16.4"; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let (major, minor) = match text.split_once('.') {
            Some((major, minor)) => (major, Some(minor.parse().ok()?)),
            None => (text, None),
        };
        Some(Self {
            major: major.parse().ok()?,
            minor,
        })
    }

    /// Whether the operator knows how to run this major version.
    pub fn is_supported(self) -> bool {
        SUPPORTED_MAJORS.contains(&self.major)
    }

    /// The official image of this version.
    pub fn official_image(self) -> String {
        format!("postgres:{self}")
    }
}

impl fmt::Display for PgVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.minor {
            Some(minor) => write!(f, "{}.{minor}", self.major),
            None => write!(f, "{}", self.major),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_major_or_a_major_and_minor_version_parses() {
        assert_eq!(
            PgVersion::parse("16"),
            Some(PgVersion {
                major: 16,
                minor: None
            })
        );
        assert_eq!(
            PgVersion::parse("16.4"),
            Some(PgVersion {
                major: 16,
                minor: Some(4)
            })
        );
        assert_eq!(PgVersion::parse("16.x"), None);
        assert_eq!(PgVersion::parse(""), None);
    }

    #[test]
    fn each_version_maps_to_the_official_image_tag_of_the_same_name() {
        assert_eq!(
            PgVersion::parse("16.4")
                .map(PgVersion::official_image)
                .as_deref(),
            Some("postgres:16.4")
        );
        assert_eq!(
            PgVersion::parse("17")
                .map(PgVersion::official_image)
                .as_deref(),
            Some("postgres:17")
        );
    }

    #[test]
    fn only_known_majors_are_supported() {
        assert!(PgVersion::parse("16.2").is_some_and(PgVersion::is_supported));
        assert!(!PgVersion::parse("9.6").is_some_and(PgVersion::is_supported));
        assert!(!PgVersion::parse("42").is_some_and(PgVersion::is_supported));
    }
}
