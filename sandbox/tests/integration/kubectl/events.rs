//! `kubectl get events --sort-by=.lastTimestamp` with the Events operators
//! publish through events.k8s.io/v1 (kube-rs's Recorder): `eventTime` and
//! `series`, no `deprecatedLastTimestamp`.

use kube::api::{Api, PostParams};
use serde_json::json;

use super::cluster;

/// The sandbox derives the core view's `lastTimestamp` from `eventTime`
/// and `series` (see `sandbox::convert`), so the sort orders them by when
/// they happened, not by name or creation.
#[tokio::test]
async fn get_events_sorted_by_last_timestamp_orders_the_operators_events() {
    let k = cluster().await;
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(k.sb.client(), "default");
    for (name, time, series) in [
        ("a-latest", "2025-01-01T00:00:30.000000Z", None),
        ("b-earliest", "2025-01-01T00:00:10.000000Z", None),
        // First seen before the others, seen again last but one.
        (
            "c-repeated",
            "2025-01-01T00:00:05.000000Z",
            Some(json!({"count": 4, "lastObservedTime": "2025-01-01T00:00:20.000000Z"})),
        ),
    ] {
        let mut ev = json!({
            "metadata": {"name": name},
            "eventTime": time,
            "reportingController": "pgdb-operator",
            "reportingInstance": "pgdb-operator-0",
            "action": "Reconcile",
            "reason": "Reconciled",
            "note": name,
            "type": "Normal",
            "regarding": {"apiVersion": "v1", "kind": "Pod", "name": "orders-0", "namespace": "default"},
        });
        if let Some(s) = series {
            ev["series"] = s;
        }
        events
            .create(
                &PostParams::default(),
                &serde_json::from_value(ev).expect("an event"),
            )
            .await
            .expect("event created");
    }
    let out = k
        .ok(&[
            "get",
            "events",
            "--sort-by=.lastTimestamp",
            "-o",
            "custom-columns=NAME:.metadata.name,COUNT:.count",
            "--no-headers",
        ])
        .await;
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["b-earliest", "1"],
            vec!["c-repeated", "4"],
            vec!["a-latest", "1"]
        ],
        "{out}"
    );
}
