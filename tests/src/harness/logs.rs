//! Every log line a test process's operators write, kept to be read back:
//! what a test scans for secrets.
//!
//! [`capture`] installs, once per process, a tracing subscriber that keeps
//! in memory every line logged in the process at trace level (the
//! in-process operators, the sandboxes serving them, the `log` records of
//! the libraries they use), except the HTTP and TLS plumbing's own
//! tracing. While capture is on, an operator binary the harness starts
//! logs at trace level too, and its output is kept when it stops.
//! [`captured`] returns everything so far, by source.
//!
//! Where it stops: the capture is process-wide, so a test reading it sees
//! the lines of every test running beside it, not only its own; a test
//! looking for leaks is only stricter for that. Nothing is captured unless
//! a test asks for it, and the first subscriber installed in a process
//! wins.

use std::io::Write;
use std::sync::{Mutex, MutexGuard, OnceLock};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Trace level, except the plumbing whose trace lines are raw frames (the
/// HTTP and TLS stacks, and the WebSocket of a port-forward, whose frames
/// carry a SQL session's bytes), and
/// the sandbox's request log (a line per API request, which holds no
/// secrets: paths and headers, never bodies).
const FILTER: &str = "trace,hyper=info,hyper_util=info,h2=info,tower=info,tower_http=info,\
                      rustls=info,mio=info,want=info,tokio_util=info,runtime=info,\
                      tungstenite=info,tokio_tungstenite=info,\
                      sandbox::requests=info";

/// The `RUST_LOG` an operator binary gets while capture is on.
pub const BINARY_FILTER: &str = FILTER;

struct Capture {
    /// Lines the process logged through tracing.
    lines: Mutex<Vec<u8>>,
    /// Operator binaries' output, by a description of the binary.
    outputs: Mutex<Vec<(String, String)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned buffer still holds whole lines.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

static CAPTURE: OnceLock<Capture> = OnceLock::new();

/// Writes formatted lines into the capture.
struct Sink;

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(c) = CAPTURE.get() {
            lock(&c.lines).extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = Sink;

    fn make_writer(&'a self) -> Sink {
        Sink
    }
}

/// Starts capturing (once per process). Fails when another subscriber was
/// installed first, since the lines would then go elsewhere unseen.
pub fn capture() -> Result<(), String> {
    let mut first = false;
    CAPTURE.get_or_init(|| {
        first = true;
        Capture {
            lines: Mutex::new(Vec::new()),
            outputs: Mutex::new(Vec::new()),
        }
    });
    if !first {
        return Ok(());
    }
    tracing_subscriber::registry()
        .with(EnvFilter::new(FILTER))
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(Sink),
        )
        .try_init()
        .map_err(|e| format!("another tracing subscriber was installed first: {e}"))
}

/// Whether a test asked for capture.
pub fn capturing() -> bool {
    CAPTURE.get().is_some()
}

/// Keeps an operator binary's output (when capture is on).
pub fn keep_output(source: String, output: String) {
    if let Some(c) = CAPTURE.get() {
        lock(&c.outputs).push((source, output));
    }
}

/// Everything captured so far, by source: the process's tracing lines,
/// then each binary's output.
pub fn captured() -> Vec<(String, String)> {
    let Some(c) = CAPTURE.get() else {
        return vec![];
    };
    let lines = String::from_utf8_lossy(&lock(&c.lines)).into_owned();
    let mut all = vec![("the test process's log".to_string(), lines)];
    all.extend(lock(&c.outputs).iter().cloned());
    all
}
