//! The `glwarden` binary: all behaviour lives in the library; see `cli`.

fn main() -> std::process::ExitCode {
    // glibc gives each thread that allocates its own arena; under tokio's
    // workers, sqlx's and the blocking pool's threads that fragments the heap
    // (a 10,000-project daemon peaked at 53 MB with the default, 41 MB with
    // two arenas). Two are plenty for a daemon that mostly waits on GitLab.
    // SAFETY: mallopt only tunes the allocator; it is called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    glwarden::cli::main()
}
