//! The `level5-autopilot` operator binary.

fn main() -> std::process::ExitCode {
    shared::cli::main(level5_autopilot::level())
}
