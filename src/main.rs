//! The `glwarden` binary: all behaviour lives in the library; see `cli`.

// jemalloc rather than glibc's malloc for Rust's allocations: a sweep
// allocates and frees a few small buffers per request on every runtime
// thread, and glibc's shared arenas made that a fifth of the daemon's CPU
// (at 100,000 projects: 0.095 CPU seconds per 1,000 checks with glibc, 0.080
// with jemalloc, peak RSS 63 -> 70 MB). SQLite still allocates from glibc.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    // glibc, which still serves SQLite, gives each thread that allocates its
    // own arena; under sqlx's and the blocking pool's threads that fragments
    // the heap (when glibc served everything, a 10,000-project daemon peaked
    // at 53 MB with the default, 41 MB with two arenas). Two are plenty.
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
