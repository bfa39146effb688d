//! Which `spec.parameters` a database may have, checked before any of them
//! reaches a server.
//!
//! Two checks, in order, each naming why a parameter is refused:
//! 1. the [`policy`]: parameters a level owns, and parameters that would
//!    run a command, load code from a path, or read or write files outside
//!    the data directory, are refused in every major; preload libraries
//!    only by the name of an extension the official image ships;
//! 2. PostgreSQL's own [`table`] of the target major: the name must be a
//!    setting of that major (not an internal one), and the value must parse
//!    as PostgreSQL parses it: a boolean, an integer or real with a valid
//!    unit and within min and max, one of the enum values.
//!
//! Settings of extensions (a dot in the name: `pg_stat_statements.max`)
//! pass through: an extension defines them when it loads, and the server
//! ignores (with a warning) those no loaded extension claims. The checks
//! stop at single values: combinations PostgreSQL refuses at start
//! (`wal_level = minimal` with `max_wal_senders > 0`) are left to the
//! server, whose own reason the database's status then carries.

pub mod policy;
pub mod table;

pub use table::{Kind, Setting, Table};

/// Why `name = value` cannot be given to PostgreSQL `major`, or `Ok` when
/// it can. `owned` are the parameters the calling level sets itself.
/// A major without a table (not supported) is checked by the policy only.
pub fn check(major: u32, owned: &[&str], name: &str, value: &str) -> Result<(), String> {
    policy::check(owned, name, value)?;
    if name.contains('.') {
        return Ok(());
    }
    let Some(table) = Table::of(major) else {
        return Ok(());
    };
    let setting = table.get(name).ok_or_else(|| {
        format!(
            "PostgreSQL {major} has no parameter {name:?} (see the parameter table of the major)"
        )
    })?;
    setting
        .check(value)
        .map_err(|why| format!("{why} (PostgreSQL {major})"))
}

#[cfg(test)]
mod tests;
