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
    // SQLite counts every allocation under one global mutex unless told not
    // to; glwarden never reads the counts, and sqlx allocates a copy of each
    // column it reads, so the sweep's store threads queued on that lock
    // (about a third of the CPU spent reading the inventory).
    // SAFETY: sqlite3_config must precede SQLite's initialisation, which
    // happens when the first database opens, long after this; it is called
    // before any other thread exists.
    unsafe {
        libsqlite3_sys::sqlite3_config(
            libsqlite3_sys::SQLITE_CONFIG_MEMSTATUS,
            0 as std::ffi::c_int,
        );
    }
    glwarden::cli::main()
}
