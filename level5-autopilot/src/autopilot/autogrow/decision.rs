//! The auto-grow decision: from the data volume's measured use, the size
//! the volumes are at and `spec.storage.autoGrow`, whether to grow them and
//! to what size.
//!
//! A pure function of numbers: the capability reads them from the database
//! (the effective size, the spec's maximum) and from Level 4's latest
//! reading (the kubelet's volume stats), and records the decision in
//! status, from which the effective `spec.storage.size` follows.
//!
//! Where it stops: the volume measured is the one the reading measured
//! (the primary's); replicas hold the same data and grow with it. A
//! growth is decided only from a reading of the volume at its current
//! size: until the claims' new capacity is measured (the resize landed and
//! the collector measured again), the old, fuller figures decide nothing.

use shared::autopilot::autogrow::AutoGrowSpec;
use shared::quantity::Quantity;

/// One mebibyte: growths are rounded up to whole mebibytes.
pub const MI: u64 = 1 << 20;

/// What was measured of the data volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Bytes used.
    pub used_bytes: u64,
    /// The volume's capacity, in bytes.
    pub capacity_bytes: u64,
}

impl Usage {
    /// Used space in whole percent of the capacity (rounded down, as Level
    /// 4's summary quantises it); 100 when the capacity is unknown (zero).
    pub fn percent(self) -> u64 {
        self.used_bytes
            .saturating_mul(100)
            .checked_div(self.capacity_bytes)
            .unwrap_or(100)
    }
}

/// What auto-grow concluded from one measurement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No measurement of the volume (no reading yet, or one without volume
    /// stats): nothing to decide on.
    Unmeasured,
    /// The measurement is of the volume before its last growth landed (its
    /// capacity is below the size decided): wait for the next one.
    Resizing {
        /// The capacity measured.
        capacity_bytes: u64,
    },
    /// Below the threshold: nothing to do.
    Enough {
        /// The use measured, in percent.
        used_percent: u64,
    },
    /// At or above the threshold: grow every volume.
    Grow {
        /// The size the volumes are at.
        from_bytes: u64,
        /// The size they grow to (at most the maximum).
        to_bytes: u64,
        /// The use measured, in percent.
        used_percent: u64,
        /// Whether the growth stops at the maximum (it reaches maxSize).
        capped: bool,
    },
    /// At or above the threshold, and the volumes are at the maximum
    /// already: nothing more can be done but warn.
    AtMaximum {
        /// The use measured, in percent.
        used_percent: u64,
    },
}

/// Bytes of a size quantity (rounded up to a whole byte); `None` when it
/// does not parse.
pub fn bytes(quantity: &str) -> Option<u64> {
    let millis = Quantity::parse(quantity)?.millis();
    u64::try_from((millis + 999) / 1000).ok()
}

/// A size in bytes as a quantity: whole gibibytes as `Gi`, else whole
/// mebibytes as `Mi`, else bytes.
pub fn quantity(bytes: u64) -> String {
    const GI: u64 = 1 << 30;
    if bytes > 0 && bytes.is_multiple_of(GI) {
        format!("{}Gi", bytes / GI)
    } else if bytes > 0 && bytes.is_multiple_of(MI) {
        format!("{}Mi", bytes / MI)
    } else {
        bytes.to_string()
    }
}

/// The size after one growth of `size_bytes` by `increase_percent`,
/// rounded up to whole mebibytes, at most `max_bytes`.
pub fn grown(size_bytes: u64, increase_percent: u32, max_bytes: u64) -> u64 {
    let wanted = u128::from(size_bytes) * (100 + u128::from(increase_percent)) / 100;
    let mi = u128::from(MI);
    let rounded = wanted.div_ceil(mi) * mi;
    u64::try_from(rounded).unwrap_or(u64::MAX).min(max_bytes)
}

/// Decides from `usage` whether volumes of `size_bytes` grow, per `spec`
/// (whose maximum is `max_bytes`).
pub fn decide(
    spec: &AutoGrowSpec,
    size_bytes: u64,
    max_bytes: u64,
    usage: Option<Usage>,
) -> Decision {
    let Some(usage) = usage else {
        return Decision::Unmeasured;
    };
    if usage.capacity_bytes < size_bytes {
        return Decision::Resizing {
            capacity_bytes: usage.capacity_bytes,
        };
    }
    let used_percent = usage.percent();
    if used_percent < u64::from(spec.threshold_percent) {
        return Decision::Enough { used_percent };
    }
    if size_bytes >= max_bytes {
        return Decision::AtMaximum { used_percent };
    }
    let to_bytes = grown(size_bytes, spec.increase_percent, max_bytes);
    Decision::Grow {
        from_bytes: size_bytes,
        to_bytes,
        used_percent,
        capped: to_bytes >= max_bytes,
    }
}
