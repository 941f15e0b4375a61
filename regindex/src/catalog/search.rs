//! Repository search: parameters, the terms handed to PostgreSQL, and the Docker
//! registry v1 search answer (pure; the SQL is in `store::search`).
//!
//! A query matches a repository when PostgreSQL full-text search (`websearch_to_tsquery`,
//! so quotes, `or` and `-word` work as on web search engines) finds it in the repository's
//! name, title, Flatpak id or description, when every word is a prefix of a word there
//! (`calc` finds "Calculator"), or when the query is a substring of the name
//! (`calc` finds `apps/calculator`).

use serde::Serialize;

/// Results per page when `n` is not given (Docker's default).
pub const DEFAULT_PAGE_SIZE: u32 = 25;
/// Largest `n` accepted.
pub const MAX_PAGE_SIZE: u32 = 100;
/// Longest query accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 256;
/// Words of a query used for prefix matching; more are ignored (bounds the tsquery).
pub const MAX_PREFIX_WORDS: usize = 8;

/// Why search parameters were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    #[error("parameter `{parameter}` must be an integer between {min} and {max}, got {value:?}")]
    OutOfRange {
        parameter: &'static str,
        value: String,
        min: u32,
        max: u32,
    },
    #[error("parameter `q` is longer than {MAX_QUERY_CHARS} characters")]
    QueryTooLong,
    #[error("the query string cannot be read: {0}")]
    Malformed(String),
}

impl SearchError {
    pub fn parameter(&self) -> &'static str {
        match self {
            SearchError::OutOfRange { parameter, .. } => parameter,
            SearchError::QueryTooLong => "q",
            SearchError::Malformed(_) => "",
        }
    }
}

/// A validated search request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchRequest {
    /// Trimmed; empty lists every repository by name.
    pub query: String,
    pub page_size: u32,
    /// 1-based.
    pub page: u32,
}

fn parse_number(
    parameter: &'static str,
    value: Option<&str>,
    default: u32,
    max: u32,
) -> Result<u32, SearchError> {
    let Some(raw) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(default);
    };
    let out_of_range = || SearchError::OutOfRange {
        parameter,
        value: raw.chars().take(50).collect(),
        min: 1,
        max,
    };
    let n: u32 = raw.parse().map_err(|_| out_of_range())?;
    if n == 0 || n > max {
        return Err(out_of_range());
    }
    Ok(n)
}

impl SearchRequest {
    /// Validates `q`, `n` and `page` as given in the URL (already percent-decoded).
    pub fn parse(
        q: Option<&str>,
        n: Option<&str>,
        page: Option<&str>,
    ) -> Result<Self, SearchError> {
        let query = q.unwrap_or("").trim();
        if query.chars().count() > MAX_QUERY_CHARS {
            return Err(SearchError::QueryTooLong);
        }
        Ok(Self {
            query: query.to_owned(),
            page_size: parse_number("n", n, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?,
            // Bounded so that the offset stays far from overflowing.
            page: parse_number("page", page, 1, 100_000)?,
        })
    }

    pub fn offset(&self) -> i64 {
        i64::from(self.page - 1) * i64::from(self.page_size)
    }

    /// The query for `to_tsquery('simple', ...)` that requires every word as a prefix
    /// (`gnome calc` gives `gnome:* & calc:*`). Only letters and digits survive, so the
    /// result is always valid tsquery syntax; `None` when no word is left.
    ///
    /// A query using web-search syntax (`"phrase"`, `-word`, `or`) gets no prefix query:
    /// it would match what the syntax excludes.
    pub fn prefix_tsquery(&self) -> Option<String> {
        let operators = self.query.split_whitespace().any(|token| {
            token.starts_with('-') || token.contains('"') || token.eq_ignore_ascii_case("or")
        });
        if operators {
            return None;
        }
        let words: Vec<String> = self
            .query
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .take(MAX_PREFIX_WORDS)
            .map(|w| format!("{}:*", w.to_lowercase()))
            .collect();
        (!words.is_empty()).then(|| words.join(" & "))
    }

    /// `%<query>%` for `LIKE`, with the wildcards of the query escaped (`\` is the
    /// escape character); lowercase, as repository names are.
    pub fn name_pattern(&self) -> String {
        format!("%{}%", escape_like(&self.query.to_lowercase()))
    }

    /// `<query>%`: a name component starting with the query.
    pub fn name_prefix_pattern(&self) -> String {
        format!("{}%", escape_like(&self.query.to_lowercase()))
    }
}

/// Escapes `%`, `_` and `\` for a `LIKE` pattern.
pub fn escape_like(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One repository found, with what people see of it.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub name: String,
    pub title: String,
    pub description: String,
    pub rank: f32,
}

/// One page of results and the total.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchResults {
    pub hits: Vec<SearchHit>,
    pub total: u64,
}

/// The Docker registry v1 search answer (`docker search` reads this format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct V1SearchResponse {
    pub num_pages: u64,
    pub num_results: u64,
    pub page_size: u32,
    pub page: u32,
    pub query: String,
    pub results: Vec<V1SearchResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct V1SearchResult {
    pub name: String,
    pub description: String,
    pub star_count: u32,
    pub is_official: bool,
    pub is_automated: bool,
}

impl V1SearchResponse {
    pub fn new(request: &SearchRequest, results: SearchResults) -> Self {
        let page_size = u64::from(request.page_size);
        Self {
            num_pages: results.total.div_ceil(page_size),
            num_results: results.total,
            page_size: request.page_size,
            page: request.page,
            query: request.query.clone(),
            results: results
                .hits
                .into_iter()
                .map(|hit| V1SearchResult {
                    name: hit.name,
                    // Docker shows only the description; the title says more than nothing.
                    description: if hit.description.is_empty() {
                        hit.title
                    } else {
                        hit.description
                    },
                    star_count: 0,
                    is_official: false,
                    is_automated: false,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        let r = SearchRequest::parse(None, None, None).unwrap();
        assert_eq!(
            (r.query.as_str(), r.page_size, r.page),
            ("", DEFAULT_PAGE_SIZE, 1)
        );
        assert_eq!(r.offset(), 0);
        let r = SearchRequest::parse(Some("  calc "), Some("10"), Some("3")).unwrap();
        assert_eq!(
            (r.query.as_str(), r.page_size, r.page, r.offset()),
            ("calc", 10, 3, 20)
        );
        assert_eq!(
            SearchRequest::parse(None, Some(""), Some(""))
                .unwrap()
                .page_size,
            DEFAULT_PAGE_SIZE
        );
    }

    #[test]
    fn bad_parameters_name_themselves() {
        for (n, page, parameter) in [
            (Some("0"), None, "n"),
            (Some("101"), None, "n"),
            (Some("-1"), None, "n"),
            (Some("ten"), None, "n"),
            (None, Some("0"), "page"),
            (None, Some("1.5"), "page"),
            (None, Some("99999999999999999999"), "page"),
        ] {
            let err = SearchRequest::parse(Some("x"), n, page).unwrap_err();
            assert_eq!(err.parameter(), parameter, "{n:?} {page:?}");
        }
        let long = "x".repeat(MAX_QUERY_CHARS + 1);
        assert_eq!(
            SearchRequest::parse(Some(&long), None, None).unwrap_err(),
            SearchError::QueryTooLong
        );
    }

    #[test]
    fn prefix_tsquery_keeps_only_words() {
        let r = |q: &str| SearchRequest::parse(Some(q), None, None).unwrap();
        assert_eq!(
            r("GNOME calc").prefix_tsquery().as_deref(),
            Some("gnome:* & calc:*")
        );
        assert_eq!(
            r("a'b & !c:*|d").prefix_tsquery().as_deref(),
            Some("a:* & b:* & c:* & d:*")
        );
        assert_eq!(
            r("apps/calc").prefix_tsquery().as_deref(),
            Some("apps:* & calc:*")
        );
        assert_eq!(r("' & | !").prefix_tsquery(), None);
        assert_eq!(r("calc -bc").prefix_tsquery(), None);
        assert_eq!(r("\"gnome calc\"").prefix_tsquery(), None);
        assert_eq!(r("calc or notes").prefix_tsquery(), None);
        assert_eq!(r("x-ray").prefix_tsquery().as_deref(), Some("x:* & ray:*"));
        assert_eq!(r("").prefix_tsquery(), None);
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        let r = SearchRequest::parse(Some("50%_off\\"), None, None).unwrap();
        assert_eq!(r.name_pattern(), "%50\\%\\_off\\\\%");
        assert_eq!(r.name_prefix_pattern(), "50\\%\\_off\\\\%");
    }

    #[test]
    fn v1_response_shape() {
        let request = SearchRequest::parse(Some("calc"), Some("2"), Some("1")).unwrap();
        let results = SearchResults {
            hits: vec![
                SearchHit {
                    name: "apps/calculator".into(),
                    title: "Calculator".into(),
                    description: "".into(),
                    rank: 1.0,
                },
                SearchHit {
                    name: "apps/other".into(),
                    title: "Other".into(),
                    description: "Does sums".into(),
                    rank: 0.5,
                },
            ],
            total: 3,
        };
        let json = serde_json::to_value(V1SearchResponse::new(&request, results)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "num_pages": 2, "num_results": 3, "page_size": 2, "page": 1, "query": "calc",
                "results": [
                    {"name": "apps/calculator", "description": "Calculator", "star_count": 0, "is_official": false, "is_automated": false},
                    {"name": "apps/other", "description": "Does sums", "star_count": 0, "is_official": false, "is_automated": false}
                ]
            })
        );
    }
}
