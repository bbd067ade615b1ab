//! Offset pagination (REST §5.1: `page`/`per_page`, the `x-*` headers and a
//! `link` with prev/next/first/last; totals omitted above 10,000 records)
//! and keyset pagination (§5.2: only a `link` rel="next").

use super::reply::Reply;

/// GitLab stops counting above this many records.
const COUNT_LIMIT: usize = 10_000;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Offset {
    pub page: usize,
    pub per_page: usize,
}

fn get<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Reads `page`/`per_page`. Most routes clamp `per_page` to `max`
/// silently; `strict` routes (hook events: 1..20) reject it instead.
pub(crate) fn offset(
    query: &[(String, String)],
    default: usize,
    max: usize,
    strict: bool,
) -> Result<Offset, Reply> {
    let num = |key: &str| -> Result<Option<i64>, Reply> {
        match get(query, key) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| Reply::error(400, format!("{key} is invalid"))),
        }
    };
    let page = num("page")?.unwrap_or(1).max(1) as usize;
    let per_page = match num("per_page")? {
        None => default,
        Some(n) if strict && !(1..=max as i64).contains(&n) => {
            return Err(Reply::error(400, "per_page does not have a valid value"));
        }
        Some(n) if n < 1 => default,
        Some(n) => (n as usize).min(max),
    };
    Ok(Offset { page, per_page })
}

/// One page plus what the headers need.
pub(crate) struct Page<T> {
    pub items: Vec<T>,
    /// `None` above 10,000 records.
    pub total: Option<usize>,
    pub has_next: bool,
}

/// Takes the requested page; counting the rest stops at the limit.
pub(crate) fn paginate<T>(iter: impl Iterator<Item = T>, o: Offset) -> Page<T> {
    let skip = (o.page - 1).saturating_mul(o.per_page);
    let mut iter = iter.enumerate();
    let mut items = Vec::with_capacity(o.per_page.min(100));
    let mut seen = 0;
    for (i, item) in iter.by_ref() {
        seen = i + 1;
        if i >= skip {
            items.push(item);
            if items.len() == o.per_page {
                break;
            }
        }
    }
    // At least one more is looked at so `has_next` stays right past the limit.
    let rest = iter
        .take((COUNT_LIMIT + 1).saturating_sub(seen).max(1))
        .count();
    let total = seen + rest;
    Page {
        items,
        total: (total <= COUNT_LIMIT).then_some(total),
        has_next: rest > 0,
    }
}

/// `base + path + ?query` with `drop` keys replaced by `set`.
pub(crate) fn link_url(
    base: &str,
    path: &str,
    query: &[(String, String)],
    drop: &[&str],
    set: &[(&str, String)],
) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in query.iter().filter(|(k, _)| !drop.contains(&k.as_str())) {
        ser.append_pair(k, v);
    }
    for (k, v) in set {
        ser.append_pair(k, v);
    }
    format!("{base}{path}?{}", ser.finish())
}

/// The §5.1 header set for one page.
pub(crate) fn offset_headers<T>(
    base: &str,
    path: &str,
    query: &[(String, String)],
    o: Offset,
    page: &Page<T>,
) -> Vec<(String, String)> {
    let link = |n: usize, rel: &str| {
        let url = link_url(
            base,
            path,
            query,
            &["page", "per_page"],
            &[
                ("page", n.to_string()),
                ("per_page", o.per_page.to_string()),
            ],
        );
        format!("<{url}>; rel=\"{rel}\"")
    };
    let total_pages = page.total.map(|t| t.div_ceil(o.per_page).max(1));
    let mut links = Vec::new();
    if o.page > 1 {
        links.push(link(o.page - 1, "prev"));
    }
    if page.has_next {
        links.push(link(o.page + 1, "next"));
    }
    links.push(link(1, "first"));
    if let Some(tp) = total_pages {
        links.push(link(tp, "last"));
    }
    let opt = |v: Option<usize>| v.map(|n| n.to_string()).unwrap_or_default();
    let mut h = vec![
        ("link".to_string(), links.join(", ")),
        (
            "x-next-page".to_string(),
            opt(page.has_next.then_some(o.page + 1)),
        ),
        ("x-page".to_string(), o.page.to_string()),
        ("x-per-page".to_string(), o.per_page.to_string()),
        (
            "x-prev-page".to_string(),
            opt((o.page > 1).then(|| o.page - 1)),
        ),
    ];
    if let (Some(t), Some(tp)) = (page.total, total_pages) {
        h.push(("x-total".to_string(), t.to_string()));
        h.push(("x-total-pages".to_string(), tp.to_string()));
    }
    h
}

/// The keyset `link` header pointing past `last_id` (`id_after` for
/// ascending order, `id_before` for descending).
pub(crate) fn keyset_header(
    base: &str,
    path: &str,
    query: &[(String, String)],
    last_id: u64,
    ascending: bool,
) -> (String, String) {
    let key = if ascending { "id_after" } else { "id_before" };
    let url = link_url(
        base,
        path,
        query,
        &["id_after", "id_before"],
        &[(key, last_id.to_string())],
    );
    ("link".to_string(), format!("<{url}>; rel=\"next\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paginate_counts_and_stops_at_limit() {
        let o = Offset {
            page: 2,
            per_page: 10,
        };
        let p = paginate(0..25, o);
        assert_eq!(p.items, (10..20).collect::<Vec<_>>());
        assert_eq!(p.total, Some(25));
        assert!(p.has_next);
        let p = paginate(0..20_000, o);
        assert_eq!(p.total, None);
        assert!(p.has_next);
        let p = paginate(0..20, o);
        assert_eq!(p.total, Some(20));
        assert!(!p.has_next);
    }
}
