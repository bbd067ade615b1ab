//! Pagination: `Link: rel="next"` followed page by page, bounded in pages
//! and items.

use super::{ApiError, ErrorKind, GitLab, decode, endpoint_of, header_str, retry_transient};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde::de::DeserializeOwned;
use url::Url;

/// Upper bound on pages followed for one list, so a `next` link that loops
/// cannot keep a check busy forever (100 per page: a million entries).
pub(super) const MAX_PAGES: usize = 10_000;

/// The `rel="next"` target of a `Link` header.
pub(super) fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let mut pieces = part.split(';');
        let target = pieces.next()?.trim();
        let is_next = pieces.any(|p| {
            let p = p.trim();
            p == "rel=\"next\"" || p == "rel=next"
        });
        (is_next && target.starts_with('<') && target.ends_with('>'))
            .then(|| target[1..target.len() - 1].to_owned())
    })
}

impl GitLab {
    /// GET every page of a list, following `Link: rel="next"` (offset or
    /// keyset) or `x-next-page`, 100 entries a page.
    pub async fn get_all<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Vec<T>, ApiError> {
        let limit = self.options.max_list_items;
        let mut all = Vec::new();
        let mut over = false;
        self.for_each_page(path, query, |page: Vec<T>| {
            over = all.len() + page.len() > limit;
            if !over {
                all.extend(page);
            }
            std::future::ready(!over)
        })
        .await?;
        if over {
            return Err(ApiError {
                method: "GET",
                endpoint: endpoint_of(path),
                kind: ErrorKind::BadResponse {
                    status: 200,
                    message: format!(
                        "list longer than {limit} entries (check.max_list_items); not read further"
                    ),
                },
            });
        }
        Ok(all)
    }

    /// Walks the pages of a list, handing each to `visit`; stops early when it returns false.
    pub async fn for_each_page<T: DeserializeOwned, Visit: Future<Output = bool>>(
        &self,
        path: &str,
        query: &[(&str, &str)],
        mut visit: impl FnMut(Vec<T>) -> Visit,
    ) -> Result<(), ApiError> {
        let endpoint = endpoint_of(path);
        let mut url = self.api_url(path);
        {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
            if !query.iter().any(|(k, _)| *k == "per_page") {
                pairs.append_pair("per_page", "100");
            }
        }
        let mut seen = std::collections::HashSet::new();
        let (mut pages, mut items) = (0u64, 0u64);
        for _ in 0..MAX_PAGES {
            if !seen.insert(url.as_str().to_owned()) {
                return Err(ApiError {
                    method: "GET",
                    endpoint,
                    kind: ErrorKind::BadResponse {
                        status: 200,
                        message: "pagination loops: a next link points to a page already read"
                            .into(),
                    },
                });
            }
            // A transient failure costs this page a retry, not the pages
            // already read: a thousand-page listing must not fail on one bad answer.
            let (answer, page) = retry_transient(|| async {
                let answer = self.send(Method::GET, url.clone(), &endpoint, None).await?;
                let page: Vec<T> = decode(&answer.body, "GET", &endpoint)?;
                Ok::<_, ApiError>((answer, page))
            })
            .await?;
            let empty = page.is_empty();
            pages += 1;
            items += page.len() as u64;
            let stop = !visit(page).await;
            let next = self.next_page(&url, &answer.headers);
            if stop {
                return Ok(());
            }
            if next.is_none() || empty {
                // A list that ends before GitLab's own totals say it should
                // is not the whole list: deciding "missing" from it would
                // create a duplicate key or hook.
                let total_pages = header_str(&answer.headers, "x-total-pages")
                    .and_then(|v| v.trim().parse::<u64>().ok());
                let total = header_str(&answer.headers, "x-total")
                    .and_then(|v| v.trim().parse::<u64>().ok());
                let short =
                    total_pages.is_some_and(|t| pages < t) || total.is_some_and(|t| items < t);
                if short {
                    return Err(ApiError {
                        method: "GET",
                        endpoint,
                        kind: ErrorKind::BadResponse {
                            status: 200,
                            message: format!(
                                "list ended early: {items} entries on {pages} pages, GitLab announced {} entries on {} pages",
                                total.map(|t| t.to_string()).unwrap_or_else(|| "?".into()),
                                total_pages
                                    .map(|t| t.to_string())
                                    .unwrap_or_else(|| "?".into())
                            ),
                        },
                    });
                }
                return Ok(());
            }
            url = next.expect("checked above");
        }
        Err(ApiError {
            method: "GET",
            endpoint,
            kind: ErrorKind::BadResponse {
                status: 200,
                message: format!("more than {MAX_PAGES} pages"),
            },
        })
    }

    /// The next page's URL, kept on our own origin whatever host GitLab wrote
    /// into the link (it builds links from the request's Host header).
    pub(super) fn next_page(&self, current: &Url, headers: &HeaderMap) -> Option<Url> {
        if let Some(link) = header_str(headers, "link").and_then(|l| next_link(&l)) {
            let parsed = Url::parse(&link).ok()?;
            let mut next = self.web.clone();
            next.set_path(parsed.path());
            next.set_query(parsed.query());
            return Some(next);
        }
        let page = header_str(headers, "x-next-page").filter(|p| !p.trim().is_empty())?;
        let mut next = current.clone();
        let pairs: Vec<(String, String)> = current
            .query_pairs()
            .filter(|(k, _)| k != "page")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        next.query_pairs_mut()
            .clear()
            .extend_pairs(pairs)
            .append_pair("page", page.trim());
        Some(next)
    }
}
