//! The databases' readings as Prometheus series. (Stub: H2 builds it.)

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use shared::readings::Readings;

/// Encodes every database's latest reading on each scrape.
#[derive(Debug)]
pub struct DatabaseSeries(Arc<Readings>);

/// The collector `/metrics` registers for Level 4.
pub fn database_series(readings: Arc<Readings>) -> Box<dyn Collector> {
    Box::new(DatabaseSeries(readings))
}

impl Collector for DatabaseSeries {
    fn encode(&self, _encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let _ = self.0.all();
        Ok(())
    }
}
