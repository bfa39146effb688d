//! The kubelet's back-offs, shared by both runtimes: the crash-loop
//! back-off between restarts of a container that keeps exiting, and the
//! back-off between attempts to pull an image.
//!
//! Upstream the kubelet keeps one `flowcontrol.Backoff` entry per container
//! (initial 10 s, doubling, capped at 300 s). A container that exits for the
//! first time is restarted at once; each later exit waits the entry's
//! current duration (reported as `waiting` with reason `CrashLoopBackOff`)
//! before the restart, and the duration doubles up to the cap. An entry
//! that was last used more than twice the cap ago (a container that ran
//! ten minutes without failing) has expired: the next exit is treated as a
//! first one again. [`CrashLoop`] is that arithmetic, as data; the runtimes
//! do the waiting and the reporting. Durations are configurable so tests
//! can shorten them.

use std::time::Duration;

/// The durations of a back-off: the first wait and the longest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackOffConfig {
    /// The first wait (the kubelet's: 10 s); doubled per further wait.
    pub initial: Duration,
    /// The longest wait (the kubelet's: 5 min). A container that runs
    /// twice this long without failing starts afresh.
    pub max: Duration,
}

impl Default for BackOffConfig {
    fn default() -> Self {
        BackOffConfig {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
        }
    }
}

/// One container's back-off: how long to wait before its next restart
/// (or pull attempt).
#[derive(Debug, Clone)]
pub struct CrashLoop {
    config: BackOffConfig,
    /// The wait the next back-off takes; `None` before the first exit (or
    /// after a long enough run).
    current: Option<Duration>,
}

impl CrashLoop {
    pub fn new(config: BackOffConfig) -> CrashLoop {
        CrashLoop {
            config,
            current: None,
        }
    }

    /// The wait before restarting a container that exited after running
    /// `ran` since its last start: zero for a first exit (or one after a
    /// run longer than twice the cap), else the current back-off, which then
    /// doubles up to the cap.
    pub fn after_exit(&mut self, ran: Duration) -> Duration {
        let expired = ran > self.config.max * 2;
        match self.current {
            Some(wait) if !expired => {
                self.current = Some((wait * 2).min(self.config.max));
                wait
            }
            _ => {
                self.current = Some(self.config.initial.min(self.config.max));
                Duration::ZERO
            }
        }
    }

    /// The wait before the next attempt of something that failed again
    /// (an image pull): the initial wait first, then doubling up to the cap.
    pub fn next_attempt(&mut self) -> Duration {
        let wait = self
            .current
            .unwrap_or(self.config.initial)
            .min(self.config.max);
        self.current = Some((wait * 2).min(self.config.max));
        wait
    }
}

/// The message of a container waiting in `CrashLoopBackOff`, as the
/// kubelet words it.
pub fn crash_loop_message(wait: Duration, container: &str, pod: &str, namespace: &str) -> String {
    format!(
        "back-off {} restarting failed container={container} pod={pod}_{namespace}",
        humanize(wait)
    )
}

/// A duration as Go prints one (`10s`, `1m20s`, `5m0s`, `1.5s`, `500ms`).
fn humanize(d: Duration) -> String {
    let (secs, ms) = (d.as_secs(), d.subsec_millis());
    if secs == 0 {
        return format!("{ms}ms");
    }
    let fraction = if ms == 0 {
        String::new()
    } else {
        format!(".{ms:03}").trim_end_matches('0').to_string()
    };
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}{fraction}s"),
        (0, m) => format!("{m}m{s}{fraction}s"),
        (h, m) => format!("{h}h{m}m{s}{fraction}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubelet() -> CrashLoop {
        CrashLoop::new(BackOffConfig::default())
    }

    #[test]
    fn the_first_exit_restarts_at_once_and_later_ones_wait_10s_doubling_to_5min() {
        let mut b = kubelet();
        let waits: Vec<u64> = (0..8)
            .map(|_| b.after_exit(Duration::from_secs(1)).as_secs())
            .collect();
        assert_eq!(waits, [0, 10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn a_container_that_ran_ten_minutes_starts_its_back_off_afresh() {
        let mut b = kubelet();
        for _ in 0..5 {
            b.after_exit(Duration::from_secs(1));
        }
        assert_eq!(
            b.after_exit(Duration::from_secs(600)),
            Duration::from_secs(160)
        );
        assert_eq!(b.after_exit(Duration::from_secs(601)), Duration::ZERO);
        assert_eq!(
            b.after_exit(Duration::from_secs(1)),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn image_pulls_wait_from_the_first_failure() {
        let mut b = CrashLoop::new(BackOffConfig {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(2),
        });
        let waits: Vec<u128> = (0..4).map(|_| b.next_attempt().as_millis()).collect();
        assert_eq!(waits, [500, 1000, 2000, 2000]);
    }

    #[test]
    fn the_message_says_the_wait_as_the_kubelet_does() {
        let m = |s| crash_loop_message(Duration::from_millis(s), "postgres", "orders-0", "default");
        assert_eq!(
            m(10_000),
            "back-off 10s restarting failed container=postgres pod=orders-0_default"
        );
        assert!(m(80_000).starts_with("back-off 1m20s "));
        assert!(m(300_000).starts_with("back-off 5m0s "));
        assert!(m(500).starts_with("back-off 500ms "));
        assert!(m(1_500).starts_with("back-off 1.5s "));
    }
}
