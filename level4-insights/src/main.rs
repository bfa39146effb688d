//! The `level4-insights` operator binary.

fn main() -> std::process::ExitCode {
    shared::cli::main(level4_insights::level())
}
