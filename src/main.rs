//! The `glwarden` binary: all behaviour lives in the library; see `cli`.

fn main() -> std::process::ExitCode {
    glwarden::cli::main()
}
