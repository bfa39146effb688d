//! PostgreSQL's own table of settings, per supported major, and how a
//! value is checked against it.
//!
//! The tables (`pg<major>.tsv`) are generated from the real server binaries
//! by `scripts/generate-parameter-tables.sh` (`postgres --describe-config`,
//! completed with the units and enum values of `pg_settings`), committed,
//! and compared with the installed binaries by a test, so a stale table
//! fails. A value is parsed as PostgreSQL's `parse_bool`, `parse_int`,
//! `parse_real` and enum lookup parse it; strings are not checked here
//! (the [`policy`](super::policy) judges the ones that matter).

use std::collections::BTreeMap;
use std::sync::LazyLock;

/// The generated tables, by major.
const SOURCES: [(u32, &str); 5] = [
    (14, include_str!("pg14.tsv")),
    (15, include_str!("pg15.tsv")),
    (16, include_str!("pg16.tsv")),
    (17, include_str!("pg17.tsv")),
    (18, include_str!("pg18.tsv")),
];

static TABLES: LazyLock<BTreeMap<u32, Table>> = LazyLock::new(|| {
    SOURCES
        .iter()
        .map(|(major, text)| (*major, Table::parse(text)))
        .collect()
});

/// A setting's type, as PostgreSQL names it.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// on/off, true/false, yes/no, 1/0 (or unique prefixes).
    Boolean,
    /// An integer, optionally with a unit.
    Integer,
    /// A floating-point number, optionally with a unit.
    Real,
    /// One of the listed values (case-insensitive).
    Enum(Vec<String>),
    /// Free text.
    String,
}

/// One row of a table.
#[derive(Clone, Debug)]
pub struct Setting {
    /// The name, as PostgreSQL spells it (`DateStyle`).
    pub name: String,
    /// When a change takes effect (`postmaster`, `sighup`, `user`, ...).
    pub context: String,
    /// Its type.
    pub kind: Kind,
    /// Bounds, in the base unit, for integers and reals.
    pub min: Option<f64>,
    /// See `min`.
    pub max: Option<f64>,
    /// The base unit (`8kB`, `kB`, `ms`, `s`), if any.
    pub unit: Option<String>,
}

/// The settings of one major.
#[derive(Clone, Debug, Default)]
pub struct Table {
    settings: BTreeMap<String, Setting>,
}

impl Table {
    /// The table of `major`, if it is a supported one.
    pub fn of(major: u32) -> Option<&'static Table> {
        TABLES.get(&major)
    }

    /// Parses a generated table (tab-separated; `#` lines are comments).
    pub fn parse(text: &str) -> Table {
        let settings = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|line| {
                let f: Vec<&str> = line.split('\t').collect();
                let [name, context, kind, min, max, unit, enumvals] = f[..] else {
                    return None;
                };
                let kind = match kind {
                    "BOOLEAN" => Kind::Boolean,
                    "INTEGER" => Kind::Integer,
                    "REAL" => Kind::Real,
                    "ENUM" => Kind::Enum(enumvals.split(',').map(str::to_string).collect()),
                    _ => Kind::String,
                };
                let setting = Setting {
                    name: name.to_string(),
                    context: context.to_string(),
                    kind,
                    min: min.parse().ok(),
                    max: max.parse().ok(),
                    unit: (!unit.is_empty()).then(|| unit.to_string()),
                };
                Some((name.to_ascii_lowercase(), setting))
            })
            .collect();
        Table { settings }
    }

    /// The setting `name` (case-insensitive, as PostgreSQL's names are).
    pub fn get(&self, name: &str) -> Option<&Setting> {
        self.settings.get(&name.to_ascii_lowercase())
    }

    /// How many settings the table has.
    pub fn len(&self) -> usize {
        self.settings.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.settings.is_empty()
    }
}

/// Memory units PostgreSQL accepts, in bytes.
const MEMORY_UNITS: [(&str, f64); 5] = [
    ("B", 1.0),
    ("kB", 1024.0),
    ("MB", 1024.0 * 1024.0),
    ("GB", 1024.0 * 1024.0 * 1024.0),
    ("TB", 1024.0 * 1024.0 * 1024.0 * 1024.0),
];
/// Time units PostgreSQL accepts, in milliseconds.
const TIME_UNITS: [(&str, f64); 6] = [
    ("us", 0.001),
    ("ms", 1.0),
    ("s", 1000.0),
    ("min", 60_000.0),
    ("h", 3_600_000.0),
    ("d", 86_400_000.0),
];

/// A base unit's family and size: `8kB` is 8192 bytes, `min` 60000 ms.
fn base_unit(unit: &str) -> Option<(&'static [(&'static str, f64)], f64)> {
    let digits: String = unit.chars().take_while(char::is_ascii_digit).collect();
    let factor: f64 = if digits.is_empty() {
        1.0
    } else {
        digits.parse().ok()?
    };
    let name = &unit[digits.len()..];
    if let Some((_, size)) = MEMORY_UNITS.iter().find(|(n, _)| *n == name) {
        return Some((&MEMORY_UNITS, factor * size));
    }
    let (_, size) = TIME_UNITS.iter().find(|(n, _)| *n == name)?;
    Some((&TIME_UNITS, factor * size))
}

/// PostgreSQL's `parse_bool`: on/off, or a unique prefix of true, false,
/// yes, no, or 1/0, in any case.
pub fn parse_bool(value: &str) -> Option<bool> {
    let v = value.trim().to_ascii_lowercase();
    let prefix_of = |word: &str| !v.is_empty() && word.starts_with(v.as_str());
    match v.as_str() {
        "on" | "1" => Some(true),
        "of" | "off" | "0" => Some(false),
        _ if prefix_of("true") || prefix_of("yes") => Some(true),
        _ if prefix_of("false") || prefix_of("no") => Some(false),
        _ => None,
    }
}

/// A number as `strtol` (base 0: `0x1f`, `017`) or, failing that, `strtod`
/// would read it, and the rest of the text.
fn leading_number(text: &str, integer: bool) -> Option<(f64, &str)> {
    let text = text.trim_start();
    let (sign, body) = match text.strip_prefix('-') {
        Some(rest) => (-1.0, rest),
        None => (1.0, text.strip_prefix('+').unwrap_or(text)),
    };
    if integer {
        let hex = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X"));
        if let Some(hex) = hex {
            let digits: String = hex.chars().take_while(char::is_ascii_hexdigit).collect();
            if !digits.is_empty() {
                let n = i64::from_str_radix(&digits, 16).ok()? as f64;
                return Some((sign * n, &hex[digits.len()..]));
            }
        }
    }
    // The longest prefix that parses as a decimal number.
    let end = body
        .char_indices()
        .map(|(i, c)| i + c.len_utf8())
        .rfind(|&i| {
            let s = &body[..i];
            !s.ends_with(['e', 'E', '+', '-']) && s.parse::<f64>().is_ok()
        })?;
    let number: f64 = body[..end].parse().ok()?;
    // Rust reads "inf" and "nan"; strtod does too, but PostgreSQL refuses them.
    let words = body[..end]
        .chars()
        .any(|c| c.is_ascii_alphabetic() && !matches!(c, 'e' | 'E'));
    if !number.is_finite() || words {
        return None;
    }
    let rest = &body[end..];
    let octal =
        integer && end > 1 && body.starts_with('0') && !body[..end].contains(['.', 'e', 'E']);
    let number = if octal {
        i64::from_str_radix(&body[..end], 8).ok()? as f64
    } else {
        number
    };
    Some((sign * number, rest))
}

impl Setting {
    /// Why PostgreSQL would refuse `value` for this setting, or `Ok`.
    pub fn check(&self, value: &str) -> Result<(), String> {
        let name = &self.name;
        match &self.kind {
            Kind::String => Ok(()),
            Kind::Boolean => parse_bool(value).map(|_| ()).ok_or_else(|| {
                format!("{value:?} is not a boolean (on, off, true, false, yes, no, 1, 0)")
            }),
            Kind::Enum(values) => {
                let v = value.trim();
                let boolean_spelling = values.iter().any(|e| e == "on")
                    && values.iter().any(|e| e == "off")
                    && ["true", "false", "yes", "no", "1", "0"]
                        .iter()
                        .any(|b| b.eq_ignore_ascii_case(v));
                if values.iter().any(|e| e.eq_ignore_ascii_case(v)) || boolean_spelling {
                    Ok(())
                } else {
                    Err(format!(
                        "{value:?} is not one of the values of {name} ({})",
                        values.join(", ")
                    ))
                }
            }
            Kind::Integer | Kind::Real => self.check_number(value),
        }
    }

    fn check_number(&self, value: &str) -> Result<(), String> {
        let integer = self.kind == Kind::Integer;
        let what = if integer { "an integer" } else { "a number" };
        let (number, rest) =
            leading_number(value, integer).ok_or_else(|| format!("{value:?} is not {what}"))?;
        let unit_text = rest.trim();
        let base = match &self.unit {
            Some(unit) => Some(
                base_unit(unit)
                    .ok_or_else(|| format!("the table names an unknown unit {unit:?}"))?,
            ),
            None => None,
        };
        let in_base = match (unit_text, base) {
            ("", _) => number,
            (unit, Some((family, size))) => {
                let (_, unit_size) = family.iter().find(|(n, _)| *n == unit).ok_or_else(|| {
                    let valid: Vec<&str> = family.iter().map(|(n, _)| *n).collect();
                    format!(
                        "{unit:?} in {value:?} is not a unit of this parameter (valid units: {})",
                        valid.join(", ")
                    )
                })?;
                number * unit_size / size
            }
            (_, None) => {
                return Err(format!(
                    "{value:?} is not {what} (this parameter takes no unit)"
                ));
            }
        };
        let in_base = if integer { in_base.round() } else { in_base };
        let (min, max) = (
            self.min.unwrap_or(f64::NEG_INFINITY),
            self.max.unwrap_or(f64::INFINITY),
        );
        if in_base < min || in_base > max {
            let unit = self
                .unit
                .as_deref()
                .map(|u| format!(" (in units of {u})"))
                .unwrap_or_default();
            let fmt = |n: f64| {
                if n.fract() == 0.0 && n.abs() < 1e15 {
                    format!("{}", n as i64)
                } else {
                    format!("{n}")
                }
            };
            return Err(format!(
                "{value:?} is outside the valid range {} .. {}{unit}",
                fmt(min),
                fmt(max)
            ));
        }
        Ok(())
    }
}
