//! `glwarden connection move`: a connection's stored ids follow its GitLab
//! instance to a new address.

use anyhow::Context;

use crate::config::Config;
use crate::store::Store;

/// `glwarden connection move NAME --to URL`.
pub(super) async fn move_connection(
    cfg: &Config,
    store: &Store,
    name: &str,
    to: &str,
) -> anyhow::Result<u8> {
    let conn = cfg.connections.get(name).with_context(|| {
        format!(
            "connection `{name}` is not in {}: add it there with url = \"{to}\" first",
            cfg.file.display()
        )
    })?;
    let to = crate::config::parse_base_url(to).map_err(|e| anyhow::anyhow!("--to `{to}`: {e}"))?;
    // The store keeps the form the configuration is parsed into.
    if to.as_str() != conn.base_url.as_str() {
        anyhow::bail!(
            "connection `{name}` has url {} in {}, not {to}: edit the file first, then move to the same url",
            conn.base_url,
            cfg.file.display()
        );
    }
    match store.move_connection(name, conn.base_url.as_str()).await? {
        Some((was, _)) if was == conn.base_url.as_str() => {
            println!("connection `{name}` is already at {was}; nothing changed");
        }
        Some((was, projects)) => println!(
            "connection `{name}` moved from {was} to {}: the stored ids of its {projects} projects now refer to it",
            conn.base_url
        ),
        None => println!(
            "connection `{name}` has nothing in the store yet; it will be registered at {} on first use",
            conn.base_url
        ),
    }
    Ok(0)
}
