//! How printers render values: reading a string or number at a JSON
//! pointer, `<none>`-style placeholders, and ages as apimachinery's
//! `HumanDuration` prints them. Kind-independent.

use serde_json::{Map, Value};

pub(super) fn str_at<'a>(o: &'a Value, p: &str) -> &'a str {
    o.pointer(p).and_then(Value::as_str).unwrap_or_default()
}

pub(super) fn int_at(o: &Value, p: &str) -> i64 {
    o.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

pub(super) fn or_none(s: &str) -> String {
    or_default(s, "<none>")
}

pub(super) fn unset(s: &str) -> String {
    or_default(s, "<unset>")
}

pub(super) fn or_default(s: &str, d: &str) -> String {
    if s.is_empty() { d.into() } else { s.into() }
}

pub(super) fn map_len(o: &Value, p: &str) -> usize {
    o.pointer(p).and_then(Value::as_object).map_or(0, Map::len)
}

/// Time since an RFC 3339 timestamp, as `kubectl` prints ages.
pub(super) fn age(ts: &str, now: jiff::Timestamp) -> String {
    match ts.parse::<jiff::Timestamp>() {
        Ok(t) => human_duration((now.as_second() - t.as_second()).max(-2)),
        Err(_) => "<unknown>".into(),
    }
}

/// apimachinery's `duration.HumanDuration`: two significant units at most,
/// coarser as the duration grows.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let d = (hours / 24) % 365;
        return if d == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{d}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_apimachinery() {
        for (s, want) in [
            (5, "5s"),
            (119, "119s"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600 + 120, "3h2m"),
            (10 * 3600, "10h"),
            (3 * 86400, "3d"),
            (3 * 86400 + 3600, "3d1h"),
            (30 * 86400, "30d"),
        ] {
            assert_eq!(human_duration(s), want, "{s}s");
        }
    }
}
