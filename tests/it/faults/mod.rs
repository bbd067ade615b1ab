//! The fault matrix: `glwarden run` as a real child process against the
//! simulator, with repairs on `auto` (confirmed after one check) so that a
//! breakage wrongly believed WOULD be repaired, while GitLab, the network,
//! the database, the process and the clock misbehave. After each fault:
//! the daemon runs (or restarts cleanly), no component's stored definite
//! state flipped, no repair ran, no key or hook was created at GitLab, no
//! private key, hook secret or history row was lost, `PRAGMA
//! integrity_check` passes, and metrics and `/readyz` say what happened.
//!
//! One module per family of faults; `rig` holds what they share.

mod rig;

mod bad_answers;
mod clock;
mod database;
mod pagination;
mod plausible_answers;
mod process;
