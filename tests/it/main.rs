//! glwarden's integration tests, in one binary: one link of the test
//! dependencies instead of one per suite, and `cargo test --test it --
//! <module>::` runs a single suite. Each module's header says what it covers
//! (docs/testing.md has the table); the fixtures they share are in
//! `crates/glwarden-testkit`.

mod check;
mod cli;
mod daemon;
mod faults;
mod oauth;
mod pages;
mod postgres;
mod props;
mod purge;
mod repair;
mod rotation;
mod secrets;
mod tls;

// Not in a plain `cargo test`: they need Debian's `prometheus` and
// `chromium`, or minutes.
#[cfg(feature = "e2e")]
mod browser;
#[cfg(feature = "e2e")]
mod prometheus_e2e;
#[cfg(feature = "soak")]
mod soak;
