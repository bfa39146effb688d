//! One storage, several views: Events.
//!
//! A real API server keeps one Event object and serves it as both core v1
//! `events` and `events.k8s.io/v1` `events`, converting field names on the
//! way in and out (through the internal type). The sandbox stores the core
//! v1 shape and renames fields for the events.k8s.io view, so an Event an
//! operator publishes through events.k8s.io/v1 is what `kubectl describe`
//! finds through core v1, with the same name, uid and resourceVersion.

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

/// An events.k8s.io/v1 Event in the core v1 (storage) shape.
pub fn event_to_core(obj: Value) -> Value {
    rename(obj, true)
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
        assert_eq!(event_from_core(core), v1);
        assert_eq!(event_field_to_core("regarding.name"), "involvedObject.name");
        assert_eq!(event_field_to_core("reason"), "reason");
    }
}
