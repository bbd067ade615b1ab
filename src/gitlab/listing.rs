//! Project metadata in bulk, read alongside a sweep rather than before it.
//!
//! One keyset-paginated `GET /projects?membership=true&min_access_level=40`
//! (ordered by id, 100 a page) per connection runs as its own task, a few
//! pages ahead of the project checks. The sweep streams its inventory in
//! GitLab-id order and takes each project's entry as the listing passes it,
//! so the listing's requests overlap the checks' and memory holds a few
//! pages, not the whole list. A project the list lacks (or everything after
//! a listing that failed) gets `None`: the caller looks it up one by one,
//! which also tells `not_found` from `access_lost`.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::gitlab::types::Project;
use crate::gitlab::{ApiError, GitLab};

/// Pages read ahead of the checks.
const PAGES_AHEAD: usize = 4;

pub struct BulkListing {
    connection: String,
    pages: mpsc::Receiver<Result<Vec<Project>, ApiError>>,
    buffer: VecDeque<Project>,
    /// The list ended (or failed): nothing more will come.
    finished: bool,
    task: tokio::task::JoinHandle<()>,
}

impl BulkListing {
    /// Starts reading the list of `connection`.
    pub fn start(connection: &str, client: Arc<GitLab>) -> Self {
        let (tx, pages) = mpsc::channel(PAGES_AHEAD);
        let task = tokio::spawn(async move {
            let maintainer = crate::gitlab::types::MAINTAINER.to_string();
            let walked = client
                .for_each_page(
                    "projects",
                    &[
                        ("membership", "true"),
                        ("min_access_level", maintainer.as_str()),
                        ("pagination", "keyset"),
                        ("order_by", "id"),
                        ("sort", "asc"),
                    ],
                    |page: Vec<Project>| {
                        let tx = tx.clone();
                        async move { tx.send(Ok(page)).await.is_ok() }
                    },
                )
                .await;
            if let Err(e) = walked {
                let _ = tx.send(Err(e)).await;
            }
        });
        Self {
            connection: connection.to_owned(),
            pages,
            buffer: VecDeque::new(),
            finished: false,
            task,
        }
    }

    /// The listed entry of project `gitlab_id`, if the list has it. Ids
    /// must be asked for in ascending order.
    pub async fn take(&mut self, gitlab_id: u64) -> Option<Project> {
        loop {
            while let Some(front) = self.buffer.front() {
                match front.id.cmp(&gitlab_id) {
                    // Listed, but not in the inventory.
                    std::cmp::Ordering::Less => {
                        self.buffer.pop_front();
                    }
                    std::cmp::Ordering::Equal => return self.buffer.pop_front(),
                    std::cmp::Ordering::Greater => return None,
                }
            }
            if self.finished {
                return None;
            }
            match self.pages.recv().await {
                Some(Ok(page)) => self.buffer.extend(page),
                Some(Err(e)) => {
                    tracing::warn!(connection = %self.connection, error = %e, "bulk project listing failed; looking the remaining projects up one by one");
                    self.finished = true;
                }
                None => self.finished = true,
            }
        }
    }
}

impl Drop for BulkListing {
    /// A sweep that ends (or is cancelled) before the list does stops it.
    fn drop(&mut self) {
        self.task.abort();
    }
}
