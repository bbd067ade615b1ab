//! glwarden: keeps CI connected to GitLab.
pub mod sim;
