//! The `level2-upgrade` operator binary.

fn main() -> std::process::ExitCode {
    shared::cli::main(level2_upgrade::level())
}
