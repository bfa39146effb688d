//! Table columns of custom resources: the CRD's
//! `additionalPrinterColumns`, evaluated with [`crate::jsonpath`], as the
//! apiextensions server's table convertor does.

use serde_json::{Value, json};

use super::format::{age, str_at};
use super::{Cells, Col, col};
use crate::jsonpath::jsonpath;
use crate::registry::ResourceType;

/// Columns from `additionalPrinterColumns`; without any, Name and Age, as
/// the apiextensions server's table convertor does.
pub(super) fn printer(rt: &ResourceType) -> (Vec<Col>, Cells) {
    let mut cols = vec![col("Name", "string", 0)];
    let mut specs: Vec<(String, String)> = vec![];
    if rt.printer_columns.is_empty() {
        cols.push(col("Age", "date", 0));
        specs.push((".metadata.creationTimestamp".into(), "date".into()));
    }
    for c in &rt.printer_columns {
        let ty = match c["type"].as_str().unwrap_or("string") {
            "integer" => "integer",
            "number" => "number",
            "boolean" => "boolean",
            "date" => "date",
            _ => "string",
        };
        cols.push(Col {
            name: c["name"].as_str().unwrap_or_default().to_string(),
            ty,
            format: match c["format"].as_str() {
                Some("name") => "name",
                _ => "",
            },
            priority: c["priority"].as_i64().unwrap_or(0),
            description: c["description"].as_str().unwrap_or_default().to_string(),
        });
        specs.push((
            c["jsonPath"].as_str().unwrap_or_default().to_string(),
            ty.to_string(),
        ));
    }
    let cells: Cells = Box::new(move |o: &Value, now| {
        let mut cells = vec![json!(str_at(o, "/metadata/name"))];
        for (path, ty) in &specs {
            let first = jsonpath(o, path).into_iter().next();
            cells.push(match first {
                None => Value::Null,
                Some(v) => crd_cell(ty, &v, now),
            });
        }
        cells
    });
    (cols, cells)
}

/// A custom column's cell: strings print whatever the path found, other
/// types must match or the cell is empty (upstream's cellForJSONValue).
pub(super) fn crd_cell(ty: &str, v: &Value, now: jiff::Timestamp) -> Value {
    match ty {
        "integer" => v.as_i64().map(Value::from).unwrap_or(Value::Null),
        "number" => {
            if v.is_number() {
                v.clone()
            } else {
                Value::Null
            }
        }
        "boolean" => v.as_bool().map(Value::from).unwrap_or(Value::Null),
        "date" => match v.as_str() {
            Some(t) => json!(age(t, now)),
            None => Value::Null,
        },
        _ => match v {
            Value::String(s) => json!(s),
            Value::Null => Value::Null,
            other => json!(other.to_string()),
        },
    }
}
