//! One storage, several views: Events.
//!
//! A real API server keeps one Event object and serves it as both core v1
//! `events` and `events.k8s.io/v1` `events`, converting field names on the
//! way in and out (through the internal type). The sandbox stores the core
//! v1 shape and renames fields for the events.k8s.io view, so an Event an
//! operator publishes through events.k8s.io/v1 is what `kubectl describe`
//! finds through core v1, with the same name, uid and resourceVersion.
//!
//! One step goes beyond the real server's renaming: an Event written
//! through events.k8s.io/v1 with `eventTime` (and `series`) but no
//! `deprecated*` timestamps gets `firstTimestamp`, `lastTimestamp` and
//! `count` derived from them (`eventTime`; `series.lastObservedTime` and
//! `series.count` when there is a series, else `eventTime` and 1), in
//! seconds as the core type holds them. Upstream leaves those fields null
//! for such Events, and `kubectl get events --sort-by=.lastTimestamp`
//! then cannot order them (it fails or leaves them out of order); here
//! it orders the operators' Events, which kube-rs publishes that way.

use serde_json::Value;

/// (events.k8s.io/v1 field, core v1 field). Every other field has the same
/// name and shape in both.
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn rename(mut obj: Value, to_core: bool) -> Value {
    if let Some(m) = obj.as_object_mut() {
        for (v1, core) in EVENT_FIELDS {
            let (from, to) = if to_core { (v1, core) } else { (core, v1) };
            if let Some(v) = m.remove(*from) {
                m.insert((*to).to_string(), v);
            }
        }
    }
    obj
}

/// A `Time` (whole seconds) from a `MicroTime`.
fn to_seconds(micro: &str) -> String {
    match micro.find('.') {
        Some(dot) => format!("{}Z", &micro[..dot]),
        None => micro.to_string(),
    }
}

/// Fills `firstTimestamp`, `lastTimestamp` and `count` from `eventTime`
/// and `series` (see the module docs).
fn derive_core_times(obj: &mut Value) {
    let Some(m) = obj.as_object_mut() else {
        return;
    };
    let Some(event_time) = m.get("eventTime").and_then(Value::as_str).map(to_seconds) else {
        return;
    };
    let is_unset = |v: Option<&Value>| v.is_none_or(Value::is_null);
    if is_unset(m.get("firstTimestamp")) {
        m.insert("firstTimestamp".into(), Value::from(event_time.clone()));
    }
    let series = m.get("series").filter(|s| s.is_object()).cloned();
    match series {
        Some(series) => {
            let last = series
                .get("lastObservedTime")
                .and_then(Value::as_str)
                .map_or(event_time, to_seconds);
            m.insert("lastTimestamp".into(), Value::from(last));
            if let Some(count) = series.get("count").filter(|c| c.is_i64()) {
                m.insert("count".into(), count.clone());
            }
        }
        None => {
            if is_unset(m.get("lastTimestamp")) {
                m.insert("lastTimestamp".into(), Value::from(event_time));
            }
            if is_unset(m.get("count")) {
                m.insert("count".into(), Value::from(1));
            }
        }
    }
}

/// An events.k8s.io/v1 Event in the core v1 (storage) shape.
pub fn event_to_core(obj: Value) -> Value {
    let mut core = rename(obj, true);
    derive_core_times(&mut core);
    core
}

/// A core v1 (storage) Event in the events.k8s.io/v1 shape.
pub fn event_from_core(obj: Value) -> Value {
    rename(obj, false)
}

/// The storage field a field selector of the events.k8s.io view names.
pub fn event_field_to_core(field: &str) -> String {
    for (v1, core) in EVENT_FIELDS {
        if field == *v1 {
            return (*core).to_string();
        }
        if let Some(rest) = field.strip_prefix(&format!("{v1}.")) {
            return format!("{core}.{rest}");
        }
    }
    field.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_round_trip_between_views() {
        let v1 = json!({"metadata": {"name": "e"}, "regarding": {"kind": "Pod", "name": "p"},
            "note": "hi", "reason": "Started", "type": "Normal", "reportingController": "c",
            "reportingInstance": "i", "action": "Start", "eventTime": "2025-01-01T00:00:00.000000Z"});
        let core = event_to_core(v1.clone());
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["message"], "hi");
        assert_eq!(core["reportingComponent"], "c");
        let mut back = event_from_core(core);
        for derived in [
            "deprecatedFirstTimestamp",
            "deprecatedLastTimestamp",
            "deprecatedCount",
        ] {
            back.as_object_mut().map(|m| m.remove(derived));
        }
        assert_eq!(back, v1);
        assert_eq!(event_field_to_core("regarding.name"), "involvedObject.name");
        assert_eq!(event_field_to_core("reason"), "reason");
    }

    #[test]
    fn core_timestamps_come_from_the_event_time_and_the_series() {
        let single = event_to_core(json!({"eventTime": "2025-01-01T00:00:05.123456Z"}));
        assert_eq!(single["firstTimestamp"], "2025-01-01T00:00:05Z");
        assert_eq!(single["lastTimestamp"], "2025-01-01T00:00:05Z");
        assert_eq!(single["count"], 1);
        let repeated = event_to_core(json!({
            "eventTime": "2025-01-01T00:00:05.000000Z",
            "deprecatedLastTimestamp": "2025-01-01T00:00:05Z",
            "series": {"count": 3, "lastObservedTime": "2025-01-01T00:01:00.500000Z"},
        }));
        assert_eq!(repeated["firstTimestamp"], "2025-01-01T00:00:05Z");
        assert_eq!(repeated["lastTimestamp"], "2025-01-01T00:01:00Z");
        assert_eq!(repeated["count"], 3);
        let legacy = event_to_core(json!({"deprecatedLastTimestamp": "2025-01-01T00:00:01Z"}));
        assert_eq!(legacy["lastTimestamp"], "2025-01-01T00:00:01Z");
        assert!(legacy.get("count").is_none());
    }
}
