//! The `level1-install` operator binary.

fn main() -> std::process::ExitCode {
    shared::cli::main(level1_install::level())
}
