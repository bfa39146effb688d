//! Cell values of the built-in kinds' columns, as kubectl's printers
//! compute them: a pod's READY and STATUS, a Service's ports and external
//! IPs, a Job's status and duration, an Event's row, and the like. Which
//! column shows which value is `columns`'.

use serde_json::{Value, json};

use super::format::{age, human_duration, int_at, or_default, str_at};

pub(super) fn statuses(o: &Value) -> Vec<Value> {
    o.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

pub(super) fn pod_ready(o: &Value) -> String {
    let total = o
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = statuses(o)
        .iter()
        .filter(|s| s["ready"].as_bool() == Some(true))
        .count();
    format!("{ready}/{total}")
}

/// kubectl's pod STATUS: the pod phase, overridden by the reason of a
/// waiting or terminated container, and by Terminating while deleting.
pub(super) fn pod_status(o: &Value) -> String {
    let mut reason = match str_at(o, "/status/reason") {
        "" => str_at(o, "/status/phase").to_string(),
        r => r.to_string(),
    };
    let mut has_running = false;
    for s in statuses(o).iter().rev() {
        let waiting = s.pointer("/state/waiting/reason").and_then(Value::as_str);
        let terminated = s.pointer("/state/terminated");
        if let Some(w) = waiting.filter(|w| !w.is_empty()) {
            reason = w.to_string();
        } else if let Some(t) = terminated {
            reason = match t["reason"].as_str().filter(|r| !r.is_empty()) {
                Some(r) => r.to_string(),
                None => match t["signal"].as_i64().filter(|s| *s != 0) {
                    Some(sig) => format!("Signal:{sig}"),
                    None => format!("ExitCode:{}", t["exitCode"].as_i64().unwrap_or(0)),
                },
            };
        } else if s["ready"].as_bool() == Some(true) && s.pointer("/state/running").is_some() {
            has_running = true;
        }
    }
    if reason == "Completed" && has_running {
        let ready = o
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
        reason = if ready { "Running" } else { "NotReady" }.into();
    }
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        reason = if str_at(o, "/status/reason") == "NodeLost" {
            "Unknown".into()
        } else {
            "Terminating".into()
        };
    }
    reason
}

pub(super) fn pod_restarts(o: &Value, now: jiff::Timestamp) -> String {
    let mut restarts = 0;
    let mut last: Option<jiff::Timestamp> = None;
    for s in statuses(o) {
        restarts += s["restartCount"].as_i64().unwrap_or(0);
        if let Some(t) = s
            .pointer("/lastState/terminated/finishedAt")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            && last.is_none_or(|l| t > l)
        {
            last = Some(t);
        }
    }
    match last {
        Some(t) if restarts > 0 => format!(
            "{restarts} ({} ago)",
            human_duration(now.as_second() - t.as_second())
        ),
        _ => restarts.to_string(),
    }
}

pub(super) fn readiness_gates(o: &Value) -> String {
    let Some(gates) = o.pointer("/spec/readinessGates").and_then(Value::as_array) else {
        return "<none>".into();
    };
    if gates.is_empty() {
        return "<none>".into();
    }
    let conds = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let met = gates
        .iter()
        .filter(|g| {
            conds
                .iter()
                .any(|c| c["type"] == g["conditionType"] && c["status"] == "True")
        })
        .count();
    format!("{met}/{}", gates.len())
}

pub(super) fn containers(o: &Value, p: &str, field: &str) -> String {
    o.pointer(p)
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c[field].as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

pub(super) fn selector(sel: Option<&Value>) -> String {
    match sel {
        None => "<none>".into(),
        Some(s) => {
            let r = crate::selector::LabelSelector::from_label_selector(s).render();
            if r.is_empty() { "<none>".into() } else { r }
        }
    }
}

pub(super) fn map_selector(sel: Option<&Value>) -> String {
    match sel.and_then(Value::as_object) {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(","),
        _ => "<none>".into(),
    }
}

pub(super) fn controller(o: &Value) -> String {
    o.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .and_then(|refs| {
            refs.iter()
                .find(|r| r["controller"].as_bool() == Some(true))
        })
        .map(|r| {
            let api = r["apiVersion"].as_str().unwrap_or_default();
            let group = api.split_once('/').map(|(g, _)| g).unwrap_or("");
            let kind = r["kind"].as_str().unwrap_or_default().to_lowercase();
            let kind = if group.is_empty() {
                kind
            } else {
                format!("{kind}.{group}")
            };
            format!("{kind}/{}", r["name"].as_str().unwrap_or_default())
        })
        .unwrap_or_else(|| "<none>".into())
}

pub(super) fn service_type(o: &Value) -> String {
    or_default(str_at(o, "/spec/type"), "ClusterIP")
}

pub(super) fn external_ip(o: &Value) -> String {
    let external: Vec<&str> = o
        .pointer("/spec/externalIPs")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match service_type(o).as_str() {
        "ExternalName" => str_at(o, "/spec/externalName").to_string(),
        "LoadBalancer" => {
            let mut ips: Vec<String> = o
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()))
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            ips.extend(external.iter().map(|s| s.to_string()));
            if ips.is_empty() {
                "<pending>".into()
            } else {
                ips.join(",")
            }
        }
        _ if !external.is_empty() => external.join(","),
        _ => "<none>".into(),
    }
}

pub(super) fn service_ports(o: &Value) -> String {
    let Some(ports) = o.pointer("/spec/ports").and_then(Value::as_array) else {
        return "<none>".into();
    };
    if ports.is_empty() {
        return "<none>".into();
    }
    ports
        .iter()
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64() {
                Some(np) if np != 0 => format!("{}:{np}/{proto}", p["port"]),
                _ => format!("{}/{proto}", p["port"]),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) fn endpoints(o: &Value) -> String {
    let mut out = vec![];
    for subset in o
        .pointer("/subsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let ports: Vec<i64> = subset["ports"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["port"].as_i64()).collect())
            .unwrap_or_default();
        for a in subset["addresses"].as_array().into_iter().flatten() {
            let ip = a["ip"].as_str().unwrap_or_default();
            if ports.is_empty() {
                out.push(ip.to_string());
            }
            for p in &ports {
                out.push(format!("{ip}:{p}"));
            }
        }
    }
    format_list(out)
}

/// kubectl lists at most three entries and counts the rest.
pub(super) fn format_list(items: Vec<String>) -> String {
    if items.is_empty() {
        return "<none>".into();
    }
    let more = items.len().saturating_sub(3);
    let shown = items.into_iter().take(3).collect::<Vec<_>>().join(",");
    if more > 0 {
        format!("{shown} + {more} more...")
    } else {
        shown
    }
}

pub(super) fn slice_ports(o: &Value) -> String {
    let ports: Vec<String> = o
        .pointer("/ports")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| p["port"].as_i64().map(|n| n.to_string()))
                .collect()
        })
        .unwrap_or_default();
    if ports.is_empty() {
        "<unset>".into()
    } else {
        ports.join(",")
    }
}

pub(super) fn slice_endpoints(o: &Value) -> String {
    let addrs: Vec<String> = o
        .pointer("/endpoints")
        .and_then(Value::as_array)
        .map(|eps| {
            eps.iter()
                .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
                .filter_map(|a| a.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    format_list(addrs)
}

pub(super) fn access_modes(modes: Option<&Value>) -> String {
    modes
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|m| match m {
                    "ReadWriteOnce" => "RWO",
                    "ReadOnlyMany" => "ROX",
                    "ReadWriteMany" => "RWX",
                    "ReadWriteOncePod" => "RWOP",
                    other => other,
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

pub(super) fn has_condition(o: &Value, ty: &str) -> bool {
    o.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == ty && c["status"] == "True"))
}

pub(super) fn job_status(o: &Value) -> &'static str {
    if has_condition(o, "Failed") {
        "Failed"
    } else if has_condition(o, "Complete") {
        "Complete"
    } else if has_condition(o, "Suspended") {
        "Suspended"
    } else if has_condition(o, "FailureTarget") {
        "FailureTarget"
    } else if has_condition(o, "SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else if o.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else {
        "Running"
    }
}

pub(super) fn job_completions(o: &Value) -> String {
    let succeeded = int_at(o, "/status/succeeded");
    match o.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => match o.pointer("/spec/parallelism").and_then(Value::as_i64) {
            Some(p) if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    }
}

pub(super) fn job_duration(o: &Value, now: jiff::Timestamp) -> String {
    let ts = |p: &str| str_at(o, p).parse::<jiff::Timestamp>().ok();
    match (ts("/status/startTime"), ts("/status/completionTime")) {
        (None, _) => String::new(),
        (Some(s), Some(c)) => human_duration(c.as_second() - s.as_second()),
        (Some(s), None) => human_duration(now.as_second() - s.as_second()),
    }
}

pub(super) fn node_status(o: &Value) -> String {
    let ready = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"));
    let mut s = match ready.and_then(|c| c["status"].as_str()) {
        Some("True") => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        s.push_str(",SchedulingDisabled");
    }
    s
}

pub(super) fn node_address(o: &Value, ty: &str) -> String {
    o.pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|x| x["type"] == ty))
        .and_then(|x| x["address"].as_str())
        .map(String::from)
        .unwrap_or_else(|| "<none>".into())
}

pub(super) fn int_or_string(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "N/A".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

pub(super) fn subjects(o: &Value, kind: &str) -> String {
    o.pointer("/subjects")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|s| s["kind"] == kind)
                .map(|s| {
                    let name = s["name"].as_str().unwrap_or_default();
                    match s["namespace"].as_str() {
                        Some(ns) if kind == "ServiceAccount" => format!("{ns}/{name}"),
                        _ => name.to_string(),
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// The cells of upstream's event printer, from a core v1 Event.
pub(super) fn event_cells(o: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let since = |t: &str| {
        if t.is_empty() {
            "<unknown>".to_string()
        } else {
            age(t, now)
        }
    };
    let first = match str_at(o, "/firstTimestamp") {
        "" => since(str_at(o, "/eventTime")),
        t => since(t),
    };
    let mut last = match str_at(o, "/lastTimestamp") {
        "" => first.clone(),
        t => since(t),
    };
    let mut count = int_at(o, "/count");
    if let Some(series) = o.get("series").filter(|s| s.is_object()) {
        last = since(series["lastObservedTime"].as_str().unwrap_or_default());
        count = series["count"].as_i64().unwrap_or(0);
    } else if count == 0 {
        count = 1;
    }
    let kind = str_at(o, "/involvedObject/kind").to_lowercase();
    let target = match str_at(o, "/involvedObject/name") {
        "" => kind,
        n => format!("{kind}/{n}"),
    };
    let source = {
        let component = match str_at(o, "/source/component") {
            "" => str_at(o, "/reportingComponent"),
            c => c,
        };
        let host = match str_at(o, "/source/host") {
            "" => str_at(o, "/reportingInstance"),
            h => h,
        };
        if host.is_empty() {
            component.to_string()
        } else {
            format!("{component}, {host}")
        }
    };
    vec![
        json!(last),
        json!(str_at(o, "/type")),
        json!(str_at(o, "/reason")),
        json!(target),
        json!(str_at(o, "/involvedObject/fieldPath")),
        json!(source),
        json!(str_at(o, "/message").trim()),
        json!(first),
        json!(count),
        json!(str_at(o, "/metadata/name")),
    ]
}
