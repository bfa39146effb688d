//! The `level3-lifecycle` operator binary.

fn main() -> std::process::ExitCode {
    shared::cli::main(level3_lifecycle::level())
}
