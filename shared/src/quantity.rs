//! Kubernetes quantities ("1Gi", "500Mi", "250m") as exact numbers.
//!
//! The API server stores quantities in a canonical form, so "1024Mi" comes
//! back as "1Gi". Comparing them as text would make the operator see a
//! difference that is not there (and write on every reconcile) or miss a
//! shrink. Parsing to thousandths of a unit, as the API server does, makes
//! both comparisons exact.

use std::cmp::Ordering;

/// Pattern of a Kubernetes quantity without sign or exponent: `1Gi`, `500Mi`, `250m`, `2`.
pub const QUANTITY_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$";

/// A quantity in thousandths of its unit (bytes, cores).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity {
    millis: i128,
}

impl Quantity {
    /// Parses a non-negative quantity with an optional binary (Ki..Ei),
    /// decimal (k..E, m) or exponent (e3) suffix. Fractions finer than a
    /// thousandth round up, as the API server rounds them.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, suffix) = text.split_at(split);
        let (whole, fraction) = match number.split_once('.') {
            Some((w, f)) => (w, f),
            None => (number, ""),
        };
        if whole.is_empty() && fraction.is_empty() {
            return None;
        }
        let digits = format!("{whole}{fraction}");
        let mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().ok()?
        };
        let fraction_digits = u32::try_from(fraction.len()).ok()?;
        // value = mantissa / 10^fraction_digits * multiplier; kept exact as a
        // ratio until the final division into thousandths.
        let (numerator, denominator): (i128, i128) = match suffix {
            "" => (1, 1),
            "m" => (1, 1000),
            "k" => (1_000, 1),
            "M" => (1_000_000, 1),
            "G" => (1_000_000_000, 1),
            "T" => (1_000_000_000_000, 1),
            "P" => (1_000_000_000_000_000, 1),
            "E" => (1_000_000_000_000_000_000, 1),
            "Ki" => (1 << 10, 1),
            "Mi" => (1 << 20, 1),
            "Gi" => (1 << 30, 1),
            "Ti" => (1 << 40, 1),
            "Pi" => (1 << 50, 1),
            "Ei" => (1 << 60, 1),
            exponent => {
                let power = exponent.strip_prefix(['e', 'E'])?;
                let power: u32 = power.strip_prefix('+').unwrap_or(power).parse().ok()?;
                (10i128.checked_pow(power)?, 1)
            }
        };
        let scaled = mantissa.checked_mul(numerator)?.checked_mul(1000)?;
        let divisor = denominator.checked_mul(10i128.checked_pow(fraction_digits)?)?;
        let millis = scaled / divisor + i128::from(scaled % divisor != 0);
        Some(Self { millis })
    }

    /// Whether the quantity is zero.
    pub fn is_zero(self) -> bool {
        self.millis == 0
    }

    /// The quantity in thousandths of its unit: bytes × 1000 of a size,
    /// millicores of a CPU amount (`"500m"` is 500).
    pub fn millis(self) -> i128 {
        self.millis
    }
}

/// Compares two quantity strings by value; `None` when either does not parse.
pub fn compare(a: &str, b: &str) -> Option<Ordering> {
    Some(Quantity::parse(a)?.cmp(&Quantity::parse(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_decimal_notations_of_the_same_amount_are_equal() {
        assert_eq!(compare("1Gi", "1024Mi"), Some(Ordering::Equal));
        assert_eq!(compare("1G", "1000M"), Some(Ordering::Equal));
        assert_eq!(compare("0.5Gi", "512Mi"), Some(Ordering::Equal));
        assert_eq!(compare("1", "1000m"), Some(Ordering::Equal));
        assert_eq!(compare("1e3", "1k"), Some(Ordering::Equal));
        assert_eq!(compare("1073741824", "1Gi"), Some(Ordering::Equal));
    }

    #[test]
    fn a_smaller_quantity_orders_before_a_larger_one() {
        assert_eq!(compare("500Mi", "1Gi"), Some(Ordering::Less));
        assert_eq!(compare("2Gi", "2G"), Some(Ordering::Greater));
        assert_eq!(compare("250m", "1"), Some(Ordering::Less));
    }

    #[test]
    fn text_that_is_not_a_quantity_does_not_parse() {
        for bad in ["", "Gi", "1Xi", "1.2.3", "-1", "abc", "1e", "."] {
            assert_eq!(Quantity::parse(bad), None, "{bad:?} parsed");
        }
    }

    #[test]
    fn zero_is_recognised_in_any_notation() {
        assert!(Quantity::parse("0").is_some_and(Quantity::is_zero));
        assert!(Quantity::parse("0Gi").is_some_and(Quantity::is_zero));
        assert!(!Quantity::parse("1m").is_some_and(Quantity::is_zero));
    }
}
