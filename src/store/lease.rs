//! Leadership between replicas on one PostgreSQL database: the lease
//! (`leader_lease`, migrations/postgres/0002), taken when free or lapsed,
//! renewed by its holder, and the fencing token that comes with it. A
//! leader writes through a store whose connections carry its token
//! ([`Store::fenced`]); the database refuses a write to the journal, the
//! OAuth pairs or a project's owned key and hook under any token but the
//! lease's (SQLSTATE `GW001`). On SQLite (one file, one machine) the one
//! daemon always leads and nothing is fenced.

use std::time::Duration;

use tokio::time::Instant;

use chrono::{DateTime, Utc};

use super::{Db, Store, StoreError};
use crate::gitlab::WriteGate;

/// A lease held: who, its fencing token, how long it has left as the
/// database counted when it answered, and so until when (on this process's
/// monotonic clock, counted from before the question) it surely holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    pub token: i64,
    pub remaining: Duration,
    pub valid_until: Instant,
}

/// The lease as a standby sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub holder: Option<String>,
    pub token: i64,
    pub expires_at: Option<DateTime<Utc>>,
}

/// What a lease with `seconds` left looks like on SQLite: held for ever.
const SQLITE_LEASE: Duration = Duration::from_secs(u32::MAX as u64);

fn remaining(seconds: f64) -> Duration {
    Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or_default()
}

impl Store {
    /// Takes the lease for `holder` if nobody holds it or it lapsed, with a
    /// new fencing token; `None` while another replica holds it.
    pub async fn try_lead(
        &self,
        holder: &str,
        lease: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let Db::Postgres(pool) = &self.db else {
            return Ok(Some(Lease {
                holder: holder.to_owned(),
                token: 0,
                remaining: SQLITE_LEASE,
                valid_until: Instant::now() + SQLITE_LEASE,
            }));
        };
        let asked = Instant::now();
        let taken: Option<(i64, f64)> = sqlx::query_as(
            "UPDATE leader_lease
                SET holder = $1, token = token + 1, acquired_at = clock_timestamp(),
                    renewed_at = clock_timestamp(),
                    expires_at = clock_timestamp() + make_interval(secs => $2)
              WHERE id = 1 AND (holder IS NULL OR expires_at <= clock_timestamp())
          RETURNING token, EXTRACT(EPOCH FROM expires_at - clock_timestamp())::float8",
        )
        .bind(holder)
        .bind(lease.as_secs_f64())
        .fetch_optional(pool)
        .await?;
        Ok(taken.map(|(token, left)| Lease {
            holder: holder.to_owned(),
            token,
            remaining: remaining(left),
            valid_until: asked + remaining(left),
        }))
    }

    /// Renews `lease` for another `duration`; `None` when it was lost (it
    /// lapsed, or another replica took it over).
    pub async fn renew_lead(
        &self,
        lease: &Lease,
        duration: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let Db::Postgres(pool) = &self.db else {
            return Ok(Some(lease.clone()));
        };
        let asked = Instant::now();
        let left: Option<f64> = sqlx::query_scalar(
            "UPDATE leader_lease
                SET renewed_at = clock_timestamp(),
                    expires_at = clock_timestamp() + make_interval(secs => $3)
              WHERE id = 1 AND holder = $1 AND token = $2 AND expires_at > clock_timestamp()
          RETURNING EXTRACT(EPOCH FROM expires_at - clock_timestamp())::float8",
        )
        .bind(&lease.holder)
        .bind(lease.token)
        .bind(duration.as_secs_f64())
        .fetch_optional(pool)
        .await?;
        let renewed = left.map(|left| Lease {
            remaining: remaining(left),
            valid_until: asked + remaining(left),
            ..lease.clone()
        });
        if let Some(gate) = &self.gate {
            match &renewed {
                Some(renewed) => gate.extend(renewed.valid_until),
                None => gate.shut(),
            }
        }
        Ok(renewed)
    }

    /// Gives the lease up (a clean shutdown): a standby takes over at its
    /// next try instead of waiting for the lease to lapse.
    pub async fn release_lead(&self, lease: &Lease) -> Result<(), StoreError> {
        let Db::Postgres(pool) = &self.db else {
            return Ok(());
        };
        sqlx::query(
            "UPDATE leader_lease SET holder = NULL, expires_at = '-infinity'
              WHERE id = 1 AND holder = $1 AND token = $2",
        )
        .bind(&lease.holder)
        .bind(lease.token)
        .execute(pool)
        .await?;
        Ok(())
    }

    /// Who holds the lease now (`None` on SQLite).
    pub async fn leader(&self) -> Result<Option<Leader>, StoreError> {
        let Db::Postgres(pool) = &self.db else {
            return Ok(None);
        };
        let (holder, token, expires_at, live): (Option<String>, i64, Option<DateTime<Utc>>, bool) =
            sqlx::query_as(
                "SELECT holder, token,
                        CASE WHEN expires_at = '-infinity' THEN NULL ELSE expires_at END,
                        expires_at > clock_timestamp()
                   FROM leader_lease WHERE id = 1",
            )
            .fetch_one(pool)
            .await?;
        Ok(Some(Leader {
            holder: holder.filter(|_| live),
            token,
            expires_at,
        }))
    }

    /// Whether this store's lease (if it is a leader's) may still hold:
    /// always on SQLite and for stores that are not fenced.
    pub fn leads(&self) -> bool {
        self.gate.as_ref().is_none_or(WriteGate::is_open)
    }

    /// Until when this (fenced) store may write to GitLab; `None` when it
    /// is not fenced (SQLite, or a store read by a standby).
    pub fn write_gate(&self) -> Option<&WriteGate> {
        self.gate.as_ref()
    }

    /// This store with every connection carrying `lease`'s fencing token,
    /// and a write gate open until the lease ends: what a leader writes
    /// through. Renewing the lease through it keeps the gate open. On
    /// SQLite the store itself.
    pub async fn fenced(&self, lease: &Lease) -> Result<Store, StoreError> {
        let Db::Postgres(pool) = &self.db else {
            return Ok(self.clone());
        };
        let token = lease.token.to_string();
        let options = (*pool.connect_options())
            .clone()
            .options([("glwarden.fence", token.as_str())]);
        let fenced = sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(Store {
            db: Db::Postgres(fenced),
            gate: Some(WriteGate::until(lease.valid_until)),
        })
    }
}

/// The lease taken by a one-shot command (`check`, `repair`, `regenerate`,
/// `project add`) for as long as it runs: while a daemon leads, a second
/// writer is refused rather than run beside it. Renewed in the background;
/// given back by [`CommandLease::release`].
pub struct CommandLease {
    /// The store the command writes through (its token's).
    pub store: Store,
    held: Option<(Store, std::sync::Arc<std::sync::Mutex<Lease>>)>,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl CommandLease {
    /// Gives the lease back (a daemon on standby leads again at once).
    pub async fn release(mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        if let Some((store, lease)) = self.held.take() {
            let lease = lease.lock().expect("lease lock").clone();
            if let Err(e) = store.release_lead(&lease).await {
                tracing::warn!(error = %e, "the command's lease was not released; it lapses on its own");
            }
        }
    }
}

impl Store {
    /// Takes the lease for a one-shot command, or refuses while a daemon
    /// (or another command) leads; on SQLite the store itself.
    pub async fn lead_for_command(&self, period: Duration) -> Result<CommandLease, StoreError> {
        if let Db::Sqlite(_) = self.db {
            return Ok(CommandLease {
                store: self.clone(),
                held: None,
                renewer: None,
            });
        }
        let holder = format!("command:{}", std::process::id());
        let Some(lease) = self.try_lead(&holder, period).await? else {
            let leader = self
                .leader()
                .await?
                .and_then(|l| l.holder)
                .unwrap_or_default();
            return Err(StoreError::Led { leader });
        };
        let store = self.fenced(&lease).await?;
        let shared = std::sync::Arc::new(std::sync::Mutex::new(lease));
        let renewer = {
            // Renewed through the fenced store, so its write gate follows.
            let (fenced, shared) = (store.clone(), shared.clone());
            tokio::spawn(async move {
                let mut every = tokio::time::interval(period / 3);
                every.tick().await;
                loop {
                    every.tick().await;
                    let held = shared.lock().expect("lease lock").clone();
                    match fenced.renew_lead(&held, period).await {
                        Ok(Some(renewed)) => *shared.lock().expect("lease lock") = renewed,
                        // Its writes are refused from now on: the command fails.
                        Ok(None) => return,
                        Err(e) => {
                            tracing::warn!(error = %e, "the command's lease could not be renewed")
                        }
                    }
                }
            })
        };
        Ok(CommandLease {
            store,
            held: Some((self.clone(), shared)),
            renewer: Some(renewer),
        })
    }
}

impl StoreError {
    /// The database refused a write because this replica no longer holds
    /// the leader's lease (its fencing token is not the lease's).
    pub fn is_fenced(&self) -> bool {
        matches!(self, StoreError::Query(sqlx::Error::Database(e)) if e.code().as_deref() == Some("GW001"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Component;
    use crate::store::Engine;
    use crate::store::tests::{ENGINE, added_by_hand, unled_store};

    async fn begin(store: &Store, project: i64) -> Result<(), StoreError> {
        store
            .journal_begin(
                project,
                Component::Webhook,
                "create_webhook",
                &serde_json::json!({}),
                None,
                "test",
            )
            .await
            .map(drop)
    }

    #[tokio::test]
    async fn a_deposed_leaders_writes_are_refused_by_the_database() {
        ENGINE
            .scope(Engine::Postgres, async {
                let (_kept, store) = unled_store().await;
                let conn = store
                    .connection_id("main", "https://gitlab.example.com")
                    .await
                    .unwrap();
                let project = store.upsert_project(&added_by_hand(conn)).await.unwrap();
                let lease = Duration::from_secs(30);

                let a = store
                    .try_lead("a", lease)
                    .await
                    .unwrap()
                    .expect("a free lease is taken");
                assert_eq!(a.token, 1);
                assert!(a.remaining > Duration::from_secs(25), "{:?}", a.remaining);
                assert_eq!(store.try_lead("b", lease).await.unwrap(), None, "held by a");
                let leader = store.leader().await.unwrap().unwrap();
                assert_eq!((leader.holder.as_deref(), leader.token), (Some("a"), 1));

                // Only a store carrying the lease's token writes the journal.
                let as_a = store.fenced(&a).await.unwrap();
                begin(&as_a, project).await.unwrap();
                let unfenced = begin(&store, project).await.unwrap_err();
                assert!(unfenced.is_fenced(), "{unfenced}");
                assert!(
                    unfenced
                        .to_string()
                        .contains("does not hold the leader's lease"),
                    "{unfenced}"
                );

                // a stops renewing (paused, partitioned); its lease lapses and b takes over.
                sqlx::query(
                    "UPDATE leader_lease SET expires_at = clock_timestamp() - interval '1 second'",
                )
                .execute(match &store.db {
                    Db::Postgres(pool) => pool,
                    Db::Sqlite(_) => unreachable!(),
                })
                .await
                .unwrap();
                let b = store
                    .try_lead("b", lease)
                    .await
                    .unwrap()
                    .expect("a lapsed lease is taken over");
                assert_eq!(b.token, 2);
                assert_eq!(
                    store.renew_lead(&a, lease).await.unwrap(),
                    None,
                    "a's lease is gone"
                );
                let refused = begin(&as_a, project).await.unwrap_err();
                assert!(
                    refused.is_fenced(),
                    "a's write under token 1 is refused: {refused}"
                );
                let as_b = store.fenced(&b).await.unwrap();
                begin(&as_b, project).await.unwrap();
                assert_eq!(store.journal().await.unwrap().len(), 2, "a's first and b's");

                // Released, it is free at once.
                store.release_lead(&b).await.unwrap();
                assert_eq!(store.leader().await.unwrap().unwrap().holder, None);
                assert_eq!(store.try_lead("c", lease).await.unwrap().unwrap().token, 3);
            })
            .await
    }

    #[tokio::test]
    async fn on_sqlite_the_one_daemon_always_leads_unfenced() {
        let (_kept, store) = unled_store().await;
        let lease = store
            .try_lead("a", Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        assert!(
            store
                .try_lead("b", Duration::from_secs(30))
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .renew_lead(&lease, Duration::from_secs(30))
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(store.leader().await.unwrap(), None);
        let conn = store
            .connection_id("main", "https://gitlab.example.com")
            .await
            .unwrap();
        let project = store.upsert_project(&added_by_hand(conn)).await.unwrap();
        begin(&store.fenced(&lease).await.unwrap(), project)
            .await
            .unwrap();
    }
}
