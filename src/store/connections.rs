//! The `connections` table: each configured connection's name and the
//! instance (base URL) its stored ids belong to.

use super::{BeginWrite, Store, StoreError};
use chrono::Utc;

/// Whether two base URLs name the same address once parsed
/// (`https://gitlab.example.com` and `https://gitlab.example.com/` do).
pub(super) fn same_address(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

impl Store {
    /// The id of a connection, registering it on first use.
    pub async fn connection_id(&self, name: &str, base_url: &str) -> Result<i64, StoreError> {
        // Registered once; a later url never overwrites the instance the
        // stored ids belong to (`move_connection` does, on a person's word).
        on_pool!(self, |pool| sqlx::query(
            "INSERT INTO connections (name, base_url, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(base_url)
        .bind(Utc::now())
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
        let (id, stored): (i64, String) = on_pool!(self, |pool| sqlx::query_as(
            "SELECT id, base_url FROM connections WHERE name = $1"
        )
        .bind(name)
        .fetch_one(pool)
        .await)?;
        if !same_address(&stored, base_url) {
            return Err(StoreError::ConnectionMoved {
                name: name.to_owned(),
                stored,
                configured: base_url.to_owned(),
            });
        }
        Ok(id)
    }

    /// Refuses, reading only, when a configured connection's url is not the
    /// instance its stored ids belong to. Every command that talks to
    /// GitLab or hands out stored keys calls this before anything else.
    pub async fn verify_connections<'a>(
        &self,
        configured: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), StoreError> {
        let stored: std::collections::HashMap<String, String> =
            on_pool!(self, |pool| sqlx::query_as(
                "SELECT name, base_url FROM connections"
            )
            .fetch_all(pool)
            .await)?
            .into_iter()
            .collect();
        for (name, url) in configured {
            if let Some(was) = stored.get(name).filter(|was| !same_address(was, url)) {
                return Err(StoreError::ConnectionMoved {
                    name: name.to_owned(),
                    stored: was.clone(),
                    configured: url.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Points a connection's stored ids at a new address of the same
    /// instance; returns the old address and how many projects it holds,
    /// or `None` when nothing is stored under that name.
    pub async fn move_connection(
        &self,
        name: &str,
        to: &str,
    ) -> Result<Option<(String, i64)>, StoreError> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let found: Option<(i64, String)> =
                sqlx::query_as("SELECT id, base_url FROM connections WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some((id, was)) = found else {
                return Ok(None);
            };
            sqlx::query("UPDATE connections SET base_url = $2 WHERE id = $1")
                .bind(id)
                .bind(to)
                .execute(&mut *tx)
                .await?;
            let projects: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM projects WHERE connection_id = $1 AND removed_at IS NULL",
            )
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Some((was, projects)))
        })
    }

    /// Connection names by id.
    pub async fn connections(&self) -> Result<Vec<(i64, String)>, StoreError> {
        Ok(on_pool!(self, |pool| sqlx::query_as::<_, (i64, String)>(
            "SELECT id, name FROM connections ORDER BY name"
        )
        .fetch_all(pool)
        .await)?)
    }
}
