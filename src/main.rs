//! The `provd` binary: everything lives in the library; this is only the entry point.

fn main() -> std::process::ExitCode {
    provd::cli::main()
}
