//! Statistics queries, parsed once from the URL's parameters (pure, no I/O).
//!
//! Every endpoint names the parameters it accepts; anything else, or a value that does
//! not parse, is a [`QueryError`] (a 400 at the api). The SQL that answers them is in
//! [`crate::store::history`].

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::Serialize;

use crate::model::{AliasMap, RepositoryName};

pub const DEFAULT_PER_PAGE: u32 = 100;
pub const MAX_PER_PAGE: u32 = 1_000;
/// Far enough for any retention, small enough that `now() - days` never overflows.
pub const MAX_DAYS: u32 = 100 * 366;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("unknown parameter {0:?}")]
    Unknown(String),
    #[error("parameter {name:?}: {problem}")]
    Invalid { name: String, problem: String },
    #[error("parameter {0:?} is required")]
    Missing(&'static str),
}

fn invalid(name: &str, problem: impl Into<String>) -> QueryError {
    QueryError::Invalid {
        name: name.to_owned(),
        problem: problem.into(),
    }
}

/// The raw parameters of one request, consumed as they are read.
pub struct Params {
    map: BTreeMap<String, String>,
}

impl Params {
    /// Rejects parameters outside `allowed` (typos must not silently widen a query).
    pub fn new(map: BTreeMap<String, String>, allowed: &[&str]) -> Result<Self, QueryError> {
        if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(QueryError::Unknown(unknown.chars().take(100).collect()));
        }
        Ok(Self { map })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(String::as_str)
    }

    pub fn u32_in(&self, name: &str, min: u32, max: u32) -> Result<Option<u32>, QueryError> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        let value: u32 = raw
            .parse()
            .map_err(|_| invalid(name, "must be a non-negative integer"))?;
        if value < min || value > max {
            return Err(invalid(name, format!("must be between {min} and {max}")));
        }
        Ok(Some(value))
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, QueryError> {
        match self.get(name) {
            None => Ok(None),
            Some("true" | "1") => Ok(Some(true)),
            Some("false" | "0") => Ok(Some(false)),
            Some(_) => Err(invalid(name, "must be true or false")),
        }
    }

    /// RFC 3339 (`2026-11-25T10:00:00Z`) or a date (`2026-11-25`, midnight UTC).
    pub fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, QueryError> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
            return Ok(Some(t.with_timezone(&Utc)));
        }
        NaiveDate::parse_from_str(raw, "%Y-%m-%d")
            .map(|d| Some(d.and_time(NaiveTime::MIN).and_utc()))
            .map_err(|_| invalid(name, "must be an RFC 3339 time or a YYYY-MM-DD date"))
    }

    pub fn date(&self, name: &str) -> Result<Option<NaiveDate>, QueryError> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        NaiveDate::parse_from_str(raw, "%Y-%m-%d")
            .map(Some)
            .map_err(|_| invalid(name, "must be a YYYY-MM-DD date"))
    }

    pub fn repository(&self, name: &str) -> Result<Option<RepositoryName>, QueryError> {
        self.get(name)
            .map(|raw| RepositoryName::parse(raw).map_err(|e| invalid(name, e.to_string())))
            .transpose()
    }

    pub fn page(&self) -> Result<Page, QueryError> {
        Ok(Page {
            page: self
                .u32_in("page", 1, u32::MAX / MAX_PER_PAGE)?
                .unwrap_or(1),
            per_page: self
                .u32_in("per_page", 1, MAX_PER_PAGE)?
                .unwrap_or(DEFAULT_PER_PAGE),
        })
    }

    /// `registry` (normalised through the aliases, so any alias finds the same rows) and
    /// `repository`.
    pub fn scope(&self, aliases: &AliasMap) -> Result<Scope, QueryError> {
        Ok(Scope {
            registry: self.get("registry").map(|r| aliases.canonical(Some(r))),
            repository: self.repository("repository")?,
        })
    }
}

/// Which page of a stably ordered result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// From 1.
    pub page: u32,
    pub per_page: u32,
}

impl Page {
    pub fn offset(&self) -> i64 {
        i64::from(self.page - 1) * i64::from(self.per_page)
    }

    /// One row more than a page: whether it comes back tells if there is a next page
    /// without counting the whole result.
    pub fn fetch_limit(&self) -> i64 {
        i64::from(self.per_page) + 1
    }
}

/// One page of results, as the api returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub page: u32,
    pub per_page: u32,
    /// The next page's number, `null` on the last page.
    pub next_page: Option<u32>,
}

impl<T> Paged<T> {
    /// From the rows fetched with [`Page::fetch_limit`].
    pub fn from_rows(mut rows: Vec<T>, page: Page) -> Self {
        let more = rows.len() > page.per_page as usize;
        rows.truncate(page.per_page as usize);
        Self {
            items: rows,
            page: page.page,
            per_page: page.per_page,
            next_page: more.then_some(page.page + 1),
        }
    }
}

/// Optional registry and repository filters most queries take.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub registry: Option<String>,
    pub repository: Option<RepositoryName>,
}

pub const SCOPE_PARAMS: [&str; 2] = ["registry", "repository"];
pub const PAGE_PARAMS: [&str; 2] = ["page", "per_page"];

/// `GET /stats/images` and friends: which images to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSelection {
    All,
    /// First pushed (or, without push events, first seen) more than this many days ago.
    OlderThan {
        days: u32,
    },
    /// Not pulled for this many days, or never.
    NotPulledFor {
        days: u32,
        never_only: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagesQuery {
    pub scope: Scope,
    pub selection: ImageSelection,
    pub page: Page,
}

impl ImagesQuery {
    pub fn all(map: BTreeMap<String, String>, aliases: &AliasMap) -> Result<Self, QueryError> {
        let params = Params::new(map, &[&SCOPE_PARAMS[..], &PAGE_PARAMS[..]].concat())?;
        Ok(Self {
            scope: params.scope(aliases)?,
            selection: ImageSelection::All,
            page: params.page()?,
        })
    }

    pub fn older_than(
        map: BTreeMap<String, String>,
        aliases: &AliasMap,
    ) -> Result<Self, QueryError> {
        let params = Params::new(
            map,
            &[&SCOPE_PARAMS[..], &PAGE_PARAMS[..], &["days"]].concat(),
        )?;
        let days = params
            .u32_in("days", 0, MAX_DAYS)?
            .ok_or(QueryError::Missing("days"))?;
        Ok(Self {
            scope: params.scope(aliases)?,
            selection: ImageSelection::OlderThan { days },
            page: params.page()?,
        })
    }

    pub fn not_pulled(
        map: BTreeMap<String, String>,
        aliases: &AliasMap,
    ) -> Result<Self, QueryError> {
        let params = Params::new(
            map,
            &[
                &SCOPE_PARAMS[..],
                &PAGE_PARAMS[..],
                &["days", "never_pulled"],
            ]
            .concat(),
        )?;
        let never_only = params.bool("never_pulled")?.unwrap_or(false);
        let days = params.u32_in("days", 0, MAX_DAYS)?;
        let days = match (days, never_only) {
            (Some(days), _) => days,
            (None, true) => 0,
            (None, false) => return Err(QueryError::Missing("days")),
        };
        Ok(Self {
            scope: params.scope(aliases)?,
            selection: ImageSelection::NotPulledFor { days, never_only },
            page: params.page()?,
        })
    }
}

/// A scope and a page: most-tagged images, orphaned blobs, missing blobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopedQuery {
    pub scope: Scope,
    pub page: Page,
}

impl ScopedQuery {
    pub fn parse(map: BTreeMap<String, String>, aliases: &AliasMap) -> Result<Self, QueryError> {
        let params = Params::new(map, &[&SCOPE_PARAMS[..], &PAGE_PARAMS[..]].concat())?;
        Ok(Self {
            scope: params.scope(aliases)?,
            page: params.page()?,
        })
    }
}

/// `GET /stats/counts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountsQuery {
    pub scope: Scope,
}

impl CountsQuery {
    pub fn parse(map: BTreeMap<String, String>, aliases: &AliasMap) -> Result<Self, QueryError> {
        let params = Params::new(map, &SCOPE_PARAMS)?;
        Ok(Self {
            scope: params.scope(aliases)?,
        })
    }
}

/// `GET /stats/deletions`: the audit trail, by repository and time range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletionsQuery {
    pub scope: Scope,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub page: Page,
}

impl DeletionsQuery {
    pub fn parse(map: BTreeMap<String, String>, aliases: &AliasMap) -> Result<Self, QueryError> {
        let params = Params::new(
            map,
            &[&SCOPE_PARAMS[..], &PAGE_PARAMS[..], &["since", "until"]].concat(),
        )?;
        let since = params.time("since")?;
        let until = params.time("until")?;
        if let (Some(since), Some(until)) = (since, until) {
            if since > until {
                return Err(invalid("since", "must not be after until"));
            }
        }
        Ok(Self {
            scope: params.scope(aliases)?,
            since,
            until,
            page: params.page()?,
        })
    }
}

/// `GET /stats/activity`: one repository's pushes and pulls per day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityQuery {
    pub registry: Option<String>,
    pub repository: RepositoryName,
    pub since: Option<NaiveDate>,
    pub until: Option<NaiveDate>,
    pub page: Page,
}

impl ActivityQuery {
    pub fn parse(map: BTreeMap<String, String>, aliases: &AliasMap) -> Result<Self, QueryError> {
        let params = Params::new(
            map,
            &[&SCOPE_PARAMS[..], &PAGE_PARAMS[..], &["since", "until"]].concat(),
        )?;
        let scope = params.scope(aliases)?;
        let since = params.date("since")?;
        let until = params.date("until")?;
        if let (Some(since), Some(until)) = (since, until) {
            if since > until {
                return Err(invalid("since", "must not be after until"));
            }
        }
        Ok(Self {
            registry: scope.registry,
            repository: scope.repository.ok_or(QueryError::Missing("repository"))?,
            since,
            until,
            page: params.page()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn aliases() -> AliasMap {
        let aliases = [(
            "registry.example.com".to_owned(),
            vec!["registry:5000".to_owned()],
        )]
        .into_iter()
        .collect();
        AliasMap::new(&aliases, "", false).unwrap()
    }

    #[test]
    fn pages_default_and_bound() {
        let q = ScopedQuery::parse(map(&[]), &aliases()).unwrap();
        assert_eq!(
            q.page,
            Page {
                page: 1,
                per_page: DEFAULT_PER_PAGE
            }
        );
        let q = ScopedQuery::parse(map(&[("page", "3"), ("per_page", "20")]), &aliases()).unwrap();
        assert_eq!((q.page.offset(), q.page.fetch_limit()), (40, 21));
        for bad in [
            ("page", "0"),
            ("per_page", "0"),
            ("per_page", "1001"),
            ("page", "-1"),
            ("page", "x"),
        ] {
            let err = ScopedQuery::parse(map(&[bad]), &aliases()).unwrap_err();
            assert!(matches!(err, QueryError::Invalid { .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn paged_knows_whether_there_is_more() {
        let page = Page {
            page: 2,
            per_page: 2,
        };
        assert_eq!(Paged::from_rows(vec![1, 2, 3], page).next_page, Some(3));
        let last = Paged::from_rows(vec![1, 2], page);
        assert_eq!((last.items, last.next_page), (vec![1, 2], None));
    }

    #[test]
    fn unknown_and_missing_parameters_are_refused() {
        assert_eq!(
            ScopedQuery::parse(map(&[("repo", "a")]), &aliases()).unwrap_err(),
            QueryError::Unknown("repo".into())
        );
        assert_eq!(
            ImagesQuery::older_than(map(&[]), &aliases()).unwrap_err(),
            QueryError::Missing("days")
        );
        assert_eq!(
            ActivityQuery::parse(map(&[]), &aliases()).unwrap_err(),
            QueryError::Missing("repository")
        );
        assert!(ScopedQuery::parse(map(&[("repository", "Bad")]), &aliases()).is_err());
    }

    #[test]
    fn registry_filter_goes_through_the_aliases() {
        let q = ImagesQuery::all(
            map(&[("registry", "REGISTRY:5000"), ("repository", "a/b")]),
            &aliases(),
        )
        .unwrap();
        assert_eq!(q.scope.registry.as_deref(), Some("registry.example.com"));
        assert_eq!(q.scope.repository.unwrap().as_str(), "a/b");
    }

    #[test]
    fn not_pulled_takes_days_or_never() {
        let q = ImagesQuery::not_pulled(map(&[("days", "30")]), &aliases()).unwrap();
        assert_eq!(
            q.selection,
            ImageSelection::NotPulledFor {
                days: 30,
                never_only: false
            }
        );
        let q = ImagesQuery::not_pulled(map(&[("never_pulled", "true")]), &aliases()).unwrap();
        assert_eq!(
            q.selection,
            ImageSelection::NotPulledFor {
                days: 0,
                never_only: true
            }
        );
        assert!(ImagesQuery::not_pulled(map(&[("never_pulled", "maybe")]), &aliases()).is_err());
        assert!(ImagesQuery::not_pulled(map(&[("days", "99999999")]), &aliases()).is_err());
    }

    #[test]
    fn time_ranges() {
        let q = DeletionsQuery::parse(
            map(&[
                ("since", "2026-11-01"),
                ("until", "2026-11-25T10:00:00+01:00"),
            ]),
            &aliases(),
        )
        .unwrap();
        assert_eq!(q.since.unwrap().to_rfc3339(), "2026-11-01T00:00:00+00:00");
        assert_eq!(q.until.unwrap().to_rfc3339(), "2026-11-25T09:00:00+00:00");
        assert!(DeletionsQuery::parse(
            map(&[("since", "2026-12-01"), ("until", "2026-11-01")]),
            &aliases()
        )
        .is_err());
        assert!(DeletionsQuery::parse(map(&[("since", "yesterday")]), &aliases()).is_err());
        assert!(ActivityQuery::parse(
            map(&[("repository", "a"), ("since", "2026-13-01")]),
            &aliases()
        )
        .is_err());
    }
}
