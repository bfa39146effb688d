//! The levels the suite knows, by number.
//!
//! A scenario runs against each of them; adding a level to the workspace
//! means adding it here, and the behaviour matrix grows a column.

use std::path::PathBuf;

use shared::Level;

/// A level of the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LevelId {
    /// Basic Install.
    One,
    /// Seamless Upgrades.
    Two,
    /// Full Lifecycle.
    Three,
    /// Deep Insights.
    Four,
    /// Auto Pilot.
    Five,
}

impl LevelId {
    /// Every level, lowest first.
    pub const ALL: [LevelId; 5] = [
        LevelId::One,
        LevelId::Two,
        LevelId::Three,
        LevelId::Four,
        LevelId::Five,
    ];

    /// The level's number.
    pub fn number(self) -> u8 {
        match self {
            LevelId::One => 1,
            LevelId::Two => 2,
            LevelId::Three => 3,
            LevelId::Four => 4,
            LevelId::Five => 5,
        }
    }

    /// The level's crate and binary name.
    pub fn name(self) -> &'static str {
        match self {
            LevelId::One => "level1-install",
            LevelId::Two => "level2-upgrade",
            LevelId::Three => "level3-lifecycle",
            LevelId::Four => "level4-insights",
            LevelId::Five => "level5-autopilot",
        }
    }

    /// The level, built from its library, to run in-process.
    pub fn build(self) -> Level {
        match self {
            LevelId::One => level1_install::level(),
            LevelId::Two => level2_upgrade::level(),
            LevelId::Three => level3_lifecycle::level(),
            LevelId::Four => level4_insights::level(),
            LevelId::Five => level5_autopilot::level(),
        }
    }

    /// The level by number.
    pub fn from_number(number: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.number() == number)
    }

    /// Where cargo puts the level's binary, beside the running executable's
    /// target directory. `cargo test` does not build other packages' binaries:
    /// `scripts/test.sh` runs `cargo build --workspace --bins` first.
    pub fn binary(self) -> PathBuf {
        let exe = std::env::current_exe().unwrap_or_default();
        let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
        if dir.ends_with("deps") {
            dir.pop();
        }
        dir.join(self.name())
    }
}
