//! The behaviour matrix: scenarios by levels, in words.

use std::collections::BTreeMap;

use crate::levels::LevelId;
use crate::scenarios;

/// Where the committed matrix lives, from the workspace root.
pub const PATH: &str = "docs/behaviour-matrix.md";

/// Renders the observations, by scenario name and level, as the Markdown
/// document committed in `docs/`.
pub fn render(observed: &BTreeMap<(&'static str, LevelId), String>) -> String {
    let mut text = String::from(
        "# Behaviour matrix\n\n\
         What each level does in the same situation, as observed by the behaviour suite\n\
         (`tests/src/scenarios/`, one file per scenario) on the sandbox. Generated:\n\
         `cargo test -p tests --test suite behaviour` fails when this file differs from what\n\
         the suite observes, and `PGDB_UPDATE_MATRIX=1 cargo test -p tests --test suite behaviour`\n\
         rewrites it.\n\n",
    );
    text.push_str("| Scenario |");
    for level in LevelId::ALL {
        text.push_str(&format!(" Level {} (`{}`) |", level.number(), level.name()));
    }
    text.push_str("\n|---|");
    for _ in LevelId::ALL {
        text.push_str("---|");
    }
    text.push('\n');
    for scenario in scenarios::all() {
        text.push_str(&format!("| {} |", scenario.title));
        for level in LevelId::ALL {
            let cell = observed
                .get(&(scenario.name, level))
                .map(String::as_str)
                .unwrap_or("(not run)");
            text.push_str(&format!(" {} |", cell.replace('|', "\\|")));
        }
        text.push('\n');
    }
    text
}
