//! The operator's own process metrics (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_open_fds`,
//! `process_start_time_seconds`, ...), read from `/proc/self` at scrape
//! time, as client_golang's process collector does.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

/// Encodes the process metrics on each scrape.
#[derive(Debug)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, _encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // TODO(H1): read /proc/self/stat, statm, fd and encode the series.
        Ok(())
    }
}
