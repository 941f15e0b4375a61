//! Pagination of `_catalog` and `tags/list`: the `Link` header, and the `last` fallback.

/// The target of the `rel="next"` entry of a `Link` header (RFC 8288), as written:
/// `</v2/_catalog?last=b&n=2>; rel="next"` gives `/v2/_catalog?last=b&n=2`.
pub fn next_link(header: &str) -> Option<&str> {
    // Entries are comma-separated; a target never contains '>' unescaped.
    let mut rest = header;
    while let Some(start) = rest.find('<') {
        let after_start = &rest[start + 1..];
        let end = after_start.find('>')?;
        let target = &after_start[..end];
        let params_and_more = &after_start[end + 1..];
        let params = params_and_more
            .split_once('<')
            .map_or(params_and_more, |(p, _)| p);
        let is_next = params.split(';').skip(1).any(|p| {
            let Some((name, value)) = p.split_once('=') else {
                return false;
            };
            name.trim().eq_ignore_ascii_case("rel")
                && value
                    .trim()
                    .trim_end_matches(',')
                    .trim()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|rel| rel.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(target);
        }
        rest = &after_start[end + 1..];
    }
    None
}

/// The query of a link target (absolute URL, absolute path or relative), without '?'.
///
/// Only the query of a next link is used: the path is always the endpoint being
/// paginated under the configured base URL, so a link can neither send the client to
/// another host nor lose the base URL's path prefix (docker-registry 2.8 does include the
/// prefix, other registries may not).
pub fn link_query(target: &str) -> &str {
    let without_fragment = target.split('#').next().unwrap_or(target);
    without_fragment
        .split_once('?')
        .map_or("", |(_, query)| query)
}

/// What to do after one page.
#[derive(Debug, PartialEq, Eq)]
pub enum NextPage {
    /// Request this query string next.
    Query(String),
    Done,
}

/// Decides the next request. With a `Link`, follow its query. Without one, a full page
/// (exactly `page_size` entries) may mean more: ask again from `last`. Registries that
/// ignore `n` (docker-registry 2.8 on `tags/list`) return more than `page_size` without a
/// link: that is everything. `added` counts the page's entries not seen before, so that a
/// registry answering the same page again cannot loop forever.
pub fn next_page(
    link: Option<&str>,
    page_len: usize,
    added: usize,
    page_size: u32,
    last_entry: Option<&str>,
) -> NextPage {
    if added == 0 {
        return NextPage::Done;
    }
    if let Some(target) = link {
        let query = link_query(target);
        if !query.is_empty() {
            return NextPage::Query(query.to_owned());
        }
        return NextPage::Done;
    }
    match last_entry {
        Some(last) if page_len == page_size as usize => {
            let query = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("n", &page_size.to_string())
                .append_pair("last", last)
                .finish();
            NextPage::Query(query)
        }
        _ => NextPage::Done,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links() {
        assert_eq!(
            next_link(r#"</v2/_catalog?last=b&n=2>; rel="next""#),
            Some("/v2/_catalog?last=b&n=2")
        );
        assert_eq!(
            next_link(r#"<https://r/v2/a/tags/list?n=2&last=x>; rel=next"#),
            Some("https://r/v2/a/tags/list?n=2&last=x")
        );
        assert_eq!(
            next_link(r#"</first>; rel="first", </p2?last=c>; rel="prev next""#),
            Some("/p2?last=c")
        );
        assert_eq!(next_link(r#"</v2/_catalog?last=b>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
        assert_eq!(next_link("<unterminated; rel=next"), None);
    }

    #[test]
    fn only_the_query_of_a_link_is_used() {
        assert_eq!(
            link_query("https://evil.example/v2/_catalog?last=a&n=2"),
            "last=a&n=2"
        );
        assert_eq!(link_query("/pfx/v2/_catalog?last=a&n=2#frag"), "last=a&n=2");
        assert_eq!(link_query("/v2/_catalog"), "");
    }

    #[test]
    fn next_page_decisions() {
        let link = "/v2/_catalog?last=b&n=2";
        assert_eq!(
            next_page(Some(link), 2, 2, 2, Some("b")),
            NextPage::Query("last=b&n=2".into())
        );
        // No link, full page: continue from the last entry.
        assert_eq!(
            next_page(None, 2, 2, 2, Some("b/c")),
            NextPage::Query("n=2&last=b%2Fc".into())
        );
        // No link, short or over-long page: done.
        assert_eq!(next_page(None, 1, 1, 2, Some("b")), NextPage::Done);
        assert_eq!(next_page(None, 5, 5, 2, Some("b")), NextPage::Done);
        // Nothing new: done even with a link.
        assert_eq!(next_page(Some(link), 2, 0, 2, Some("b")), NextPage::Done);
        assert_eq!(next_page(None, 0, 0, 2, None), NextPage::Done);
    }
}
