//! What the course's tools share: finding the clone's own files (the tour's
//! default example is the file a learner can read and edit, not a path
//! fixed at build time), the runnable blocks of the chapters, which the
//! suite's `chapters` module runs, and an in-process operator's
//! `/metrics` (Level 4's chapter reads them with curl, as from the binary).
//!
//! A runnable block is a fenced `sh` block preceded by the line
//! `<!-- runnable -->`: each of its lines is one command (a line ending in
//! `\` continues on the next). The fenced `text` block that follows it is
//! the output expected of its commands together; in it, `[..]` matches any
//! text within a line and a line `...` matches any number of lines.

use std::path::{Path, PathBuf};

/// The marker line before a runnable block.
pub const RUNNABLE: &str = "<!-- runnable -->";

/// `examples/NAME` of the clone: looked for in the current directory and
/// its parents, so the tour finds it from anywhere inside the clone.
pub fn find_example(name: &str) -> Result<PathBuf, String> {
    let here = std::env::current_dir().map_err(|e| format!("no current directory: {e}"))?;
    find_example_from(&here, name).ok_or_else(|| {
        format!(
            "examples/{name} is not in {} or a directory above it; run the tour from the clone, or pass --example FILE",
            here.display()
        )
    })
}

/// `examples/NAME` in `start` or the nearest directory above it holding one.
pub fn find_example_from(start: &Path, name: &str) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join("examples").join(name))
        .find(|path| path.is_file())
}

/// How often an operator run by the tour or a chapter's test measures each
/// database (a level with insights): shorter than the binary's default
/// (`--metrics-interval`, 30 s), so a change shows within seconds.
pub const METRICS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The environment variable the chapters' blocks read the operator's
/// `/metrics` address from (`curl "http://$METRICS/metrics"`); the tour
/// prints the line that sets it.
pub const METRICS_VARIABLE: &str = "METRICS";

/// The operator's metrics, served as its binary serves them (`/metrics`
/// beside `/healthz` and `/readyz`), for an operator run in-process.
pub struct ServedMetrics {
    /// Where they are served.
    pub address: std::net::SocketAddr,
    /// What to give the operator (`RunOptions::metrics`).
    pub metrics: std::sync::Arc<shared::metrics::Metrics>,
    /// The server; aborted to stop serving.
    pub server: tokio::task::JoinHandle<()>,
}

/// For a level with insights (Level 4 and above), its metrics served at
/// `address` (port 0: a free one); `None` for a level without.
pub async fn serve_metrics(
    level: &shared::Level,
    address: std::net::SocketAddr,
    readiness: shared::health::Readiness,
) -> Result<Option<ServedMetrics>, shared::Error> {
    let Some(insights) = &level.insights else {
        return Ok(None);
    };
    let metrics = std::sync::Arc::new(shared::metrics::Metrics::new(Some(
        insights.database_series,
    )));
    let (address, serve) = shared::health::bind(address, readiness, Some(metrics.clone())).await?;
    Ok(Some(ServedMetrics {
        address,
        metrics,
        server: tokio::spawn(serve),
    }))
}

/// A runnable block of a chapter and the output it is expected to print.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Runnable {
    /// The line of the chapter the block starts at (1-based), for messages.
    pub line: usize,
    /// Its commands, in order, continuations joined.
    pub commands: Vec<String>,
    /// The expected output, one entry a line.
    pub expected: Vec<String>,
}

/// The runnable blocks of a chapter, in order. A marked block without a
/// following `text` block is an error naming its line.
pub fn runnable_blocks(markdown: &str) -> Result<Vec<Runnable>, String> {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() != RUNNABLE {
            i += 1;
            continue;
        }
        let start = i + 1;
        if lines.get(start).map(|l| l.trim()) != Some("```sh") {
            return Err(format!(
                "line {}: {RUNNABLE} is not followed by a ```sh block",
                i + 1
            ));
        }
        let (body, next) = fenced(&lines, start)?;
        let mut commands: Vec<String> = Vec::new();
        let mut continued = false;
        for line in body {
            if continued {
                if let Some(last) = commands.last_mut() {
                    last.push('\n');
                    last.push_str(line);
                }
            } else if !line.trim().is_empty() && !line.trim_start().starts_with('#') {
                commands.push(line.to_string());
            }
            continued = line.ends_with('\\');
        }
        let mut j = next;
        while lines.get(j).is_some_and(|l| l.trim().is_empty()) {
            j += 1;
        }
        if lines.get(j).map(|l| l.trim()) != Some("```text") {
            return Err(format!(
                "line {}: the runnable block is not followed by a ```text block of its output",
                start + 1
            ));
        }
        let (output, after) = fenced(&lines, j)?;
        blocks.push(Runnable {
            line: start + 1,
            commands,
            expected: output.iter().map(|l| l.to_string()).collect(),
        });
        i = after;
    }
    Ok(blocks)
}

/// The lines inside the fence opening at `open`, and the line after it.
fn fenced<'a>(lines: &[&'a str], open: usize) -> Result<(Vec<&'a str>, usize), String> {
    let close = (open + 1..lines.len())
        .find(|&k| lines[k].trim() == "```")
        .ok_or_else(|| format!("line {}: the block is never closed", open + 1))?;
    Ok((lines[open + 1..close].to_vec(), close + 1))
}

/// Whether `actual` output matches `expected`, line by line, with `[..]`
/// matching any text within a line and a line `...` any lines. Trailing
/// spaces are ignored.
pub fn matches(expected: &[String], actual: &str) -> bool {
    let actual: Vec<&str> = actual.lines().map(str::trim_end).collect();
    let expected: Vec<&str> = expected.iter().map(|l| l.trim_end()).collect();
    lines_match(&expected, &actual)
}

fn lines_match(expected: &[&str], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((&"...", rest)) => (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..])),
        Some((line, rest)) => actual
            .split_first()
            .is_some_and(|(first, others)| line_matches(line, first) && lines_match(rest, others)),
    }
}

/// One line against a pattern in which `[..]` matches any text.
pub fn line_matches(pattern: &str, line: &str) -> bool {
    let mut parts = pattern.split("[..]");
    let Some(first) = parts.next() else {
        return line.is_empty();
    };
    let Some(mut rest) = line.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (k, part) in parts.iter().enumerate() {
        if k + 1 == parts.len() {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_placeholder_matches_any_text_within_a_line() {
        assert!(line_matches(
            "orders   16.4   Ready   True   [..]",
            "orders   16.4   Ready   True   2s"
        ));
        assert!(line_matches("[..]", "anything"));
        assert!(line_matches("a[..]b[..]c", "a-x-b-y-c"));
        assert!(!line_matches("a[..]b", "a-x-c"));
        assert!(!line_matches("exact", "exact and more"));
    }

    #[test]
    fn an_ellipsis_line_matches_any_lines() {
        let expected = vec!["first".to_string(), "...".into(), "last".into()];
        assert!(matches(&expected, "first\nlast\n"));
        assert!(matches(&expected, "first\na\nb\nlast\n"));
        assert!(!matches(&expected, "first\na\n"));
    }

    #[test]
    fn runnable_blocks_are_the_marked_ones_with_their_output() {
        let chapter = "text\n\n```sh\nnot run\n```\n\n<!-- runnable -->\n```sh\n# a comment\nkubectl get pgdb\nkubectl patch x \\\n  -p y\n```\n\n```text\nNAME [..]\n```\n";
        let blocks = runnable_blocks(chapter).expect("parses");
        assert_eq!(blocks.len(), 1);
        assert_eq!(
            blocks[0].commands,
            ["kubectl get pgdb", "kubectl patch x \\\n  -p y"]
        );
        assert_eq!(blocks[0].expected, ["NAME [..]"]);
        assert!(runnable_blocks("<!-- runnable -->\n```sh\nx\n```\n").is_err());
    }

    #[test]
    fn the_clones_example_is_found_from_a_directory_inside_it() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let found = find_example_from(&root.join("src"), "basic.yaml").expect("found");
        assert!(found.ends_with("examples/basic.yaml"));
        assert!(find_example_from(Path::new("/"), "basic.yaml").is_none());
    }

    /// Every PostgresDB in examples/ reads back field for field: a field
    /// the API does not have (a misspelt `autoGrow`, say) would be dropped
    /// by the schema's pruning and silently do nothing.
    #[test]
    fn every_example_database_has_only_fields_the_api_knows() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut checked = 0;
        for entry in std::fs::read_dir(&root).expect("examples/ is readable") {
            let path = entry.expect("an entry").path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("readable");
            for document in serde_yaml::Deserializer::from_str(&text) {
                let written: serde_json::Value =
                    serde::Deserialize::deserialize(document).expect("YAML");
                if written["kind"] != "PostgresDB" {
                    continue;
                }
                let db: shared::api::PostgresDB = serde_json::from_value(written.clone())
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let read_back = serde_json::to_value(&db.spec).expect("serialises");
                let mut known = read_back.clone();
                merge_defaults(&mut known, &written["spec"]);
                assert_eq!(
                    known,
                    read_back,
                    "{}: a field of spec is not in the API",
                    path.display()
                );
                checked += 1;
            }
        }
        assert!(checked >= 8, "only {checked} example databases found");
    }

    /// Lays `written` over `defaults`: the result differs from `defaults`
    /// only where `written` has a field `defaults` lacks or a different
    /// value.
    fn merge_defaults(defaults: &mut serde_json::Value, written: &serde_json::Value) {
        match (defaults, written) {
            (serde_json::Value::Object(d), serde_json::Value::Object(w)) => {
                for (key, value) in w {
                    merge_defaults(
                        d.entry(key.clone()).or_insert(serde_json::Value::Null),
                        value,
                    );
                }
            }
            (d, w) => *d = w.clone(),
        }
    }
}
