//! The operator's own process metrics, read from `/proc/self` at scrape
//! time, under the names client_golang's process collector gives them, so
//! dashboards and alerts written for any Prometheus-instrumented process
//! work on the operator too:
//! - `process_cpu_seconds_total`: user and system CPU time;
//! - `process_resident_memory_bytes`, `process_virtual_memory_bytes`;
//! - `process_start_time_seconds`: since the Unix epoch;
//! - `process_open_fds`, `process_max_fds`;
//! - `process_threads`.
//!
//! Why read at scrape time: the figures are the kernel's, so nothing is
//! kept between scrapes and a scrape costs a few small file reads.
//!
//! Where it stops: Linux only (the operator's image runs on Linux). Where
//! `/proc` cannot be read, the series it would give are left out rather
//! than failing the scrape: the operator's other series still matter.

use std::fs;
use std::path::Path;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// The unit of CPU times in `/proc/<pid>/stat`: `USER_HZ`, which the
/// kernel fixes at 100 for what it exports to user space on every
/// architecture (Prometheus' procfs library assumes the same).
const TICKS_PER_SECOND: f64 = 100.0;

/// One reading of the process, every figure optional: what could not be
/// read is left out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, in bytes.
    pub resident_memory_bytes: Option<u64>,
    /// Virtual memory size, in bytes.
    pub virtual_memory_bytes: Option<u64>,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors (`None` when unlimited).
    pub max_fds: Option<u64>,
    /// Threads of the process.
    pub threads: Option<u64>,
}

/// The fields of `/proc/<pid>/stat` the collector uses.
#[derive(Clone, Debug, Default, PartialEq)]
struct Stat {
    utime: u64,
    stime: u64,
    threads: u64,
    /// Clock ticks after boot.
    start_ticks: u64,
    vsize: u64,
}

/// Parses `/proc/<pid>/stat`. The second field (the command, in
/// parentheses) may hold spaces and parentheses itself, so the fields are
/// counted after its last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3 (state) of proc(5); field n is `fields[n - 3]`.
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        threads: field(20)?,
        start_ticks: field(22)?,
        vsize: field(23)?,
    })
}

/// The boot time (`btime`, seconds since the epoch) in `/proc/stat`.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime"))
        .and_then(|value| value.trim().parse().ok())
}

/// `VmRSS` of `/proc/<pid>/status`, in bytes (the file says kB).
fn parse_resident_bytes(text: &str) -> Option<u64> {
    let line = text.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
    let kilobytes: u64 = line.split_whitespace().next()?.parse().ok()?;
    Some(kilobytes * 1024)
}

/// The soft limit of "Max open files" in `/proc/<pid>/limits`; `None`
/// when unlimited or unreadable.
fn parse_max_fds(text: &str) -> Option<u64> {
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

/// Reads the process `proc` (`/proc/self`), with `/proc/stat` at `boot`.
fn read_from(proc: &Path, boot: &Path) -> ProcessStats {
    let stat = fs::read_to_string(proc.join("stat"))
        .ok()
        .and_then(|text| parse_stat(&text));
    let boot_time = fs::read_to_string(boot)
        .ok()
        .and_then(|text| parse_boot_time(&text));
    // Precision: CPU ticks and start ticks stay far below 2^52.
    #[allow(clippy::cast_precision_loss)]
    let seconds = |ticks: u64| ticks as f64 / TICKS_PER_SECOND;
    #[allow(clippy::cast_precision_loss)]
    let start_time_seconds = stat
        .as_ref()
        .zip(boot_time)
        .map(|(stat, boot)| boot as f64 + seconds(stat.start_ticks));
    ProcessStats {
        cpu_seconds: stat.as_ref().map(|s| seconds(s.utime + s.stime)),
        resident_memory_bytes: fs::read_to_string(proc.join("status"))
            .ok()
            .and_then(|text| parse_resident_bytes(&text)),
        virtual_memory_bytes: stat.as_ref().map(|s| s.vsize),
        start_time_seconds,
        open_fds: fs::read_dir(proc.join("fd"))
            .ok()
            .map(|entries| entries.count() as u64),
        max_fds: fs::read_to_string(proc.join("limits"))
            .ok()
            .and_then(|text| parse_max_fds(&text)),
        threads: stat.as_ref().map(|s| s.threads),
    }
}

impl ProcessStats {
    /// The running process, now.
    pub fn read() -> Self {
        read_from(Path::new("/proc/self"), Path::new("/proc/stat"))
    }
}

/// Encodes the process metrics on each scrape.
#[derive(Debug)]
pub struct ProcessCollector;

fn encode_one(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    let metric_encoder = encoder.encode_descriptor(name, help, unit, metric.metric_type())?;
    metric.encode(metric_encoder)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = ProcessStats::read();
        let e = &mut encoder;
        if let Some(value) = stats.cpu_seconds {
            let help = "Total user and system CPU time spent";
            encode_one(
                e,
                "process_cpu",
                help,
                Some(&Unit::Seconds),
                &ConstCounter::new(value),
            )?;
        }
        let gauges: [(&str, &str, Option<Unit>, Option<u64>); 5] = [
            (
                "process_resident_memory",
                "Resident memory size",
                Some(Unit::Bytes),
                stats.resident_memory_bytes,
            ),
            (
                "process_virtual_memory",
                "Virtual memory size",
                Some(Unit::Bytes),
                stats.virtual_memory_bytes,
            ),
            (
                "process_open_fds",
                "Open file descriptors",
                None,
                stats.open_fds,
            ),
            (
                "process_max_fds",
                "The limit on open file descriptors",
                None,
                stats.max_fds,
            ),
            ("process_threads", "OS threads", None, stats.threads),
        ];
        for (name, help, unit, value) in gauges {
            if let Some(value) = value {
                encode_one(e, name, help, unit.as_ref(), &ConstGauge::new(value))?;
            }
        }
        if let Some(value) = stats.start_time_seconds {
            encode_one(
                e,
                "process_start_time",
                "Start time of the process since the Unix epoch",
                Some(&Unit::Seconds),
                &ConstGauge::new(value),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stat_fields_are_counted_after_the_command_whatever_it_holds() {
        let text = "4242 (level4 (ins) ights) S 1 4242 4242 0 -1 4194560 2000 0 0 0 \
                    250 75 0 0 20 0 9 0 123456 987654321 3000 18446744073709551615";
        let stat = parse_stat(text).expect("parses");
        assert_eq!(
            stat,
            Stat {
                utime: 250,
                stime: 75,
                threads: 9,
                start_ticks: 123_456,
                vsize: 987_654_321,
            }
        );
        assert_eq!(parse_stat("4242 (truncated) S 1"), None);
    }

    #[test]
    fn boot_time_resident_memory_and_the_fd_limit_are_read_from_their_files() {
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
        assert_eq!(
            parse_resident_bytes("Name:\tx\nVmSize:\t  9000 kB\nVmRSS:\t  2048 kB\n"),
            Some(2048 * 1024)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_fds(unlimited), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_running_process_is_read_from_proc_self() {
        let stats = ProcessStats::read();
        assert!(stats.cpu_seconds.is_some(), "{stats:?}");
        assert!(stats.resident_memory_bytes.unwrap_or(0) > 0, "{stats:?}");
        assert!(stats.open_fds.unwrap_or(0) > 0, "{stats:?}");
        assert!(stats.threads.unwrap_or(0) >= 1, "{stats:?}");
        let now = jiff::Timestamp::now().as_second() as f64;
        let started = stats.start_time_seconds.expect("a start time");
        assert!(
            started <= now + 1.0 && started > now - 86_400.0 * 365.0,
            "{started} vs {now}"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_process_series_have_client_golang_s_names() {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(ProcessCollector));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_virtual_memory_bytes ",
            "process_start_time_seconds ",
            "process_open_fds ",
            "process_threads ",
            "# TYPE process_cpu_seconds counter",
            "# TYPE process_resident_memory_bytes gauge",
        ] {
            assert!(text.contains(name), "missing {name:?} in\n{text}");
        }
    }
}
