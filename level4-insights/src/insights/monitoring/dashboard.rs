//! The Grafana dashboard: one JSON document, kept in
//! `deploy/monitoring/grafana-dashboard.json` (importable as it is) and
//! shipped in the dashboard ConfigMap.
//!
//! It works on its first import: the Prometheus datasource is a template
//! variable (`$datasource`), and `$namespace` and `$postgresdb` choose the
//! databases, from the labels of `pgdb_database_up`. Its panels draw the
//! series of the contract only ([`contract_series`]): every database
//! series, and the operator's own. [`expressions`] lists every query of the
//! document, panels and variables, and [`series_named`] the series a query
//! names, so a test proves both.
//!
//! Where it stops: the dashboard shows figures; the alerts and the
//! PostgresDB's conditions say when a figure is a problem.

use serde_json::Value;

/// The dashboard's JSON, as committed.
pub const DASHBOARD_JSON: &str =
    include_str!("../../../../deploy/monitoring/grafana-dashboard.json");

/// The operator's own series (`shared::metrics`), as a query names them
/// (counters with `_total`, the histogram's `_bucket`, `_sum` and `_count`).
pub const OPERATOR_SERIES: &[&str] = &[
    "pgdb_operator_reconciles_total",
    "pgdb_operator_reconcile_failures_total",
    "pgdb_operator_reconcile_duration_seconds_bucket",
    "pgdb_operator_reconcile_duration_seconds_sum",
    "pgdb_operator_reconcile_duration_seconds_count",
    "pgdb_operator_applied_objects_total",
    "pgdb_operator_sql_probes_total",
    "pgdb_operator_backups_total",
];

/// The series of the contract: the databases' (as `series` encodes them)
/// and the operator's own.
pub fn contract_series() -> Vec<String> {
    crate::insights::series::sample_names()
        .into_iter()
        .map(|(name, _)| name)
        .chain(OPERATOR_SERIES.iter().map(|name| name.to_string()))
        .collect()
}

/// One query of the dashboard: where it is, and its PromQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// The panel's title, or `variable <name>`.
    pub place: String,
    /// The PromQL (for a variable, the selector of its
    /// `label_values(selector, label)`).
    pub expr: String,
}

/// Every query of a dashboard document: each panel target's `expr` (rows'
/// nested panels included) and each query variable's `query`.
pub fn expressions(dashboard: &Value) -> Vec<Query> {
    fn panels(list: &Value, out: &mut Vec<Query>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or_default();
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push(Query {
                        place: title.to_string(),
                        expr: expr.to_string(),
                    });
                }
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] != "query" {
            continue;
        }
        let query = match &variable["query"] {
            Value::String(query) => Some(query.as_str()),
            object => object["query"].as_str(),
        };
        if let Some(query) = query {
            // `label_values(selector, label)`: the selector is the query.
            let query = query
                .strip_prefix("label_values(")
                .and_then(|inner| inner.rsplit_once(','))
                .map_or(query, |(selector, _label)| selector.trim());
            out.push(Query {
                place: format!("variable {}", variable["name"].as_str().unwrap_or_default()),
                expr: query.to_string(),
            });
        }
    }
    out
}

/// PromQL's words that are not series: functions, aggregations, keywords
/// and Grafana's query-variable function.
const PROMQL_WORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "topk",
    "bottomk",
    "quantile",
    "histogram_quantile",
    "rate",
    "irate",
    "increase",
    "delta",
    "time",
    "timestamp",
    "vector",
    "scalar",
    "clamp_min",
    "clamp_max",
    "abs",
    "max_over_time",
    "min_over_time",
    "changes",
    "resets",
    "absent",
    "label_values",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
];

/// Clauses whose parenthesised list holds label names, not series.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The series a PromQL expression names: every identifier that is not a
/// PromQL word, a label name (in `{...}` matchers, `by (...)` and the
/// like), a string, a duration or a number.
pub fn series_named(expr: &str) -> Vec<String> {
    // Drop strings, label matchers and range selectors, which hold label
    // names, values, durations and Grafana variables.
    let mut plain = String::new();
    let mut skip_until: Option<char> = None;
    for c in expr.chars() {
        match skip_until {
            Some(end) if c == end => skip_until = None,
            Some(_) => {}
            None => match c {
                '"' => skip_until = Some('"'),
                '{' => skip_until = Some('}'),
                '[' => skip_until = Some(']'),
                c => plain.push(c),
            },
        }
    }
    let mut words: Vec<(String, char)> = Vec::new();
    let mut word = String::new();
    let chars: Vec<char> = plain.chars().collect();
    let mut index = 0;
    while index <= chars.len() {
        let c = chars.get(index).copied().unwrap_or(' ');
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '$' {
            word.push(c);
        } else if !word.is_empty() {
            // The next character that is not a space tells a function call.
            let next = chars[index..]
                .iter()
                .copied()
                .find(|c| !c.is_whitespace())
                .unwrap_or(' ');
            words.push((std::mem::take(&mut word), next));
        }
        index += 1;
    }
    let mut series = Vec::new();
    let mut in_label_list = false;
    for (word, next) in words {
        if in_label_list {
            // Label names up to the closing parenthesis; a label list's
            // closing is the first `)` after the clause, so names only.
            if next == ')' {
                in_label_list = false;
            }
            continue;
        }
        if LABEL_LISTS.contains(&word.as_str()) {
            in_label_list = next == '(';
            continue;
        }
        let number = word.chars().next().is_some_and(|c| c.is_ascii_digit());
        if number || word.starts_with('$') || PROMQL_WORDS.contains(&word.as_str()) {
            continue;
        }
        series.push(word);
    }
    series
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_names_its_series_and_not_its_labels_functions_or_numbers() {
        let expr = "100 * sum by (namespace, postgresdb) (rate(pgdb_database_deadlocks_total{namespace=~\"$namespace\"}[$__rate_interval]))\n / on (namespace, postgresdb) group_left max by (namespace, postgresdb) (pgdb_database_up) > 0.5";
        assert_eq!(
            series_named(expr),
            ["pgdb_database_deadlocks_total", "pgdb_database_up"]
        );
        assert_eq!(series_named("up == 0"), ["up"]);
    }
}
