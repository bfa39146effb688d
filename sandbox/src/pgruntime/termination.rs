//! Termination messages: what a container says about why it exited.
//!
//! Kubernetes gives every container a file at its `terminationMessagePath`
//! (default `/dev/termination-log`): the kubelet bind-mounts a fresh, empty,
//! world-writable file there for each run of the container. When the
//! container exits, the end of that file (at most 4096 bytes) becomes
//! `state.terminated.message` of its status, and `lastState.terminated.message`
//! once it has been restarted. With `terminationMessagePolicy:
//! FallbackToLogsOnError`, a container that failed (non-zero exit) and left
//! the file empty (or removed it) gets the end of its log instead: the last
//! 80 lines, at most their last 2048 bytes. A Job's script can so report a
//! summary (`echo "dumped 42 tables" > /dev/termination-log`) that anyone
//! reads from the pod's status.
//!
//! On the sandbox the file is `<pod>/containers/<name>/termination-log`,
//! recreated empty (mode 0666, owned by the user processes run as) before
//! each start; the container path is translated to it like a mount path
//! ([`rewrite`](super::rewrite)), so a script writing to
//! `/dev/termination-log` writes there.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::process::RunAs;

/// The most of the file that becomes the message (the kubelet's
/// `MaxContainerTerminationMessageLength`).
pub const MAX_MESSAGE_BYTES: u64 = 4096;
/// The most of the log that becomes the message on a fallback
/// (`MaxContainerTerminationMessageLogLength`).
pub const MAX_LOG_BYTES: usize = 2048;
/// How many log lines a fallback reads (`MaxContainerTerminationMessageLogLines`).
pub const MAX_LOG_LINES: usize = 80;

/// Creates the file empty, writable by anyone (as the kubelet makes it),
/// before a run of the container.
pub fn prepare(file: &Path, run_as: &RunAs) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(file, b"")?;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o666))?;
    run_as.own(file)
}

/// The last `max` bytes of a file.
fn tail(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    if len > max {
        f.seek(SeekFrom::Start(len - max))?;
    }
    let mut out = vec![];
    f.take(max).read_to_end(&mut out)?;
    Ok(out)
}

/// The end of a log as a fallback message: its last [`MAX_LOG_LINES`]
/// lines, of which at most the last [`MAX_LOG_BYTES`] bytes.
fn log_tail(log: &Path) -> String {
    let Ok(bytes) = std::fs::read(log) else {
        return String::new();
    };
    // Start of the last MAX_LOG_LINES lines (a final newline ends a line,
    // it does not begin one).
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let start = body
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'\n')
        .nth(MAX_LOG_LINES - 1)
        .map_or(0, |(i, _)| i + 1);
    let lines = &bytes[start..];
    let from = lines.len().saturating_sub(MAX_LOG_BYTES);
    String::from_utf8_lossy(&lines[from..]).into_owned()
}

/// The message of a run that ended with `exit_code`: the end of the
/// termination file, or, under `FallbackToLogsOnError` after a failure
/// with nothing in the file, the end of the log. `None` when empty.
pub fn message(file: &Path, log: &Path, fallback_to_logs: bool, exit_code: i32) -> Option<String> {
    let fallback = fallback_to_logs && exit_code != 0;
    let text = match tail(file, MAX_MESSAGE_BYTES) {
        Ok(bytes) if !bytes.is_empty() || !fallback => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(_) => log_tail(log),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if fallback {
                log_tail(log)
            } else {
                String::new()
            }
        }
        Err(e) => format!("Error on reading termination log {}: {e}", file.display()),
    };
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, content: &[u8]) -> std::path::PathBuf {
        let p =
            std::env::temp_dir().join(format!("pgdb-termination-{name}-{}", std::process::id()));
        std::fs::write(&p, content).expect("a temporary file");
        p
    }

    #[test]
    fn the_message_is_the_end_of_the_file_at_most_4096_bytes() {
        let mut content = vec![b'a'; 5000];
        content.extend_from_slice(b"the end");
        let file = temp("long", &content);
        let log = temp("long-log", b"log line\n");
        let m = message(&file, &log, false, 1).expect("a message");
        assert_eq!(m.len(), 4096);
        assert!(m.ends_with("the end"), "{m}");
        let _ = std::fs::remove_file(file);
        let _ = std::fs::remove_file(log);
    }

    #[test]
    fn logs_stand_in_for_an_empty_file_only_on_failure_under_fallback_to_logs_on_error() {
        let file = temp("empty", b"");
        let lines: String = (1..=100).map(|i| format!("line {i}\n")).collect();
        let log = temp("lines-log", lines.as_bytes());
        assert_eq!(message(&file, &log, false, 1), None, "policy File");
        assert_eq!(message(&file, &log, true, 0), None, "a success");
        let m = message(&file, &log, true, 2).expect("the log's end");
        assert!(
            m.starts_with("line 21\n") && m.ends_with("line 100\n"),
            "{m}"
        );
        assert_eq!(m.lines().count(), 80);

        let long: String = (1..=50).map(|i| format!("{i:0>99}\n")).collect();
        let log2 = temp("long-lines-log", long.as_bytes());
        let m = message(&file, &log2, true, 2).expect("the log's end");
        assert_eq!(m.len(), 2048, "at most 2048 bytes of the last lines");
        assert!(m.ends_with(&format!("{:0>99}\n", 50)));

        let written = temp("written", b"summary\n");
        assert_eq!(
            message(&written, &log, true, 2).as_deref(),
            Some("summary\n"),
            "a written file wins over the logs"
        );
        for p in [file, log, log2, written] {
            let _ = std::fs::remove_file(p);
        }
    }
}
