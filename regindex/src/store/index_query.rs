//! The SQL side of index queries.
//!
//! The SQL selects the tagged images and the entries of tagged lists that pass the
//! query's conditions, using the indexes (tags by tag, GIN on labels/annotations) for
//! selectivity. Its conditions mirror `index::Query` exactly; `index::build_response`
//! applies them once more in Rust and owns the response rules (omissions, order), so a
//! pre-filter that lets too much through can never produce a wrong answer.
//!
//! Every value is bound; only fixed SQL fragments are concatenated.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use sqlx::{Postgres, QueryBuilder, Row};

use super::{rows, Store, StoreError};
use crate::index::{KeyFilter, Listing, Query, TaggedImage, TaggedList};
use crate::model::{Digest, Image, RepositoryName, Tag};

/// Longest an index query may run in the database, unless the store's sessions have
/// their own limit.
const INDEX_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Index query candidates read from one snapshot, with the data version of that snapshot.
#[derive(Debug, Clone)]
pub struct IndexSnapshot {
    pub data_version: i64,
    pub listings: Vec<Listing>,
}

/// What one snapshot holds for an answer built from per-repository parts
/// ([`Store::query_index_parts`]).
#[derive(Debug, Clone)]
pub struct IndexPartsSnapshot {
    pub data_version: i64,
    /// Every repository the query can select, with its own version
    /// (`repositories.changed_version`), by name; `None` when every repository the
    /// caller knows is still there, so that the caller's repositories with `read`'s
    /// versions are the whole set.
    pub versions: Option<BTreeMap<RepositoryName, i64>>,
    /// The repositories that were read (those whose version the caller did not have),
    /// with their versions.
    pub read: BTreeMap<RepositoryName, i64>,
    /// Candidates of the repositories that were read; a read repository without
    /// candidates has no listing.
    pub listings: Vec<Listing>,
    /// Icons (sha256) stored for the images of each read repository, when asked for.
    pub icons: HashMap<RepositoryName, HashSet<String>>,
}

/// The repositories a caller of [`Store::query_index_parts`] holds parts of, all read
/// at data version `data_version`.
pub struct KnownParts<'a> {
    pub data_version: i64,
    /// How many repositories.
    pub count: usize,
    /// The version of a repository's part.
    pub version_of: &'a (dyn Fn(&RepositoryName) -> Option<i64> + Sync),
}

/// The repositories whose version differs from the caller's parts, found row by row.
#[derive(Default)]
struct ToRead {
    versions: BTreeMap<RepositoryName, i64>,
    ids: Vec<i64>,
    /// Rows of repositories the caller has no part of.
    new: usize,
}

impl ToRead {
    fn compare(
        &mut self,
        known: Option<&KnownParts<'_>>,
        id: i64,
        name: RepositoryName,
        version: i64,
    ) {
        let held = known.and_then(|k| (k.version_of)(&name));
        self.new += usize::from(held.is_none());
        if held != Some(version) {
            self.ids.push(id);
            self.versions.insert(name, version);
        }
    }
}

/// Below this share of stale repositories, the index query is restricted to them by id;
/// above it, the unrestricted query (which the planner drives from the tags) is cheaper.
const RESTRICT_BELOW_PERCENT: usize = 50;

impl Store {
    /// Like [`Store::query_index`], but reads only the repositories whose version differs
    /// from the parts the caller holds (`known`), all from one snapshot. With `icons`,
    /// also the icons stored for the read repositories' images.
    ///
    /// A repository's version is the data version of the commit that last changed it,
    /// so only rows newer than `known.data_version` can differ: those and a count are
    /// read, not every repository's version. Only when the count shows that a known
    /// repository is gone are all versions read.
    pub async fn query_index_parts(
        &self,
        query: &Query,
        known: Option<&KnownParts<'_>>,
        icons: bool,
    ) -> Result<IndexPartsSnapshot, StoreError> {
        let mut tx = self.snapshot().await?;
        // One round trip: the data version, how many repositories the query can select,
        // and those changed since the caller's version (all of them without one). The
        // LEFT JOIN keeps one row when none changed.
        let mut changed_sql = QueryBuilder::<Postgres>::new(
            "SELECT d.version, t.total, r.id, r.name, r.changed_version
             FROM data_version d
             CROSS JOIN (SELECT count(*) AS total FROM repositories",
        );
        push_repository_filter(&mut changed_sql, query, " WHERE name");
        changed_sql
            .push(") t LEFT JOIN repositories r ON r.changed_version > ")
            .push_bind(known.map_or(i64::MIN, |k| k.data_version));
        push_repository_filter(&mut changed_sql, query, " AND r.name");
        type ChangedRow = (i64, i64, Option<i64>, Option<String>, Option<i64>);
        let rows: Vec<ChangedRow> = changed_sql.build_query_as().fetch_all(&mut *tx).await?;
        let (data_version, total) = rows.first().map_or((0, 0), |r| (r.0, r.1));
        let mut to_read = ToRead::default();
        for (_, _, id, name, version) in rows {
            let (Some(id), Some(name), Some(version)) = (id, name, version) else {
                continue;
            };
            to_read.compare(known, id, rows::repository_name(&name)?, version);
        }
        // A snapshot older than the parts (a replica behind the one read before) may
        // hold older versions of unchanged-looking repositories: compare them all.
        let all_known_remain = known.is_some_and(|k| {
            data_version >= k.data_version && k.count + to_read.new == total as usize
        });
        let versions = if all_known_remain {
            None
        } else {
            let mut versions_sql =
                QueryBuilder::<Postgres>::new("SELECT id, name, changed_version FROM repositories");
            push_repository_filter(&mut versions_sql, query, " WHERE name");
            let rows: Vec<(i64, String, i64)> =
                versions_sql.build_query_as().fetch_all(&mut *tx).await?;
            // Every repository compared afresh (the changed rows are among them).
            // Versions are data versions, so this finds nothing the changed rows did not,
            // unless a writer left a repository's version behind: then its part is read
            // all the same.
            to_read = ToRead::default();
            let mut versions = BTreeMap::new();
            for (id, name, version) in rows {
                let name = rows::repository_name(&name)?;
                to_read.compare(known, id, name.clone(), version);
                versions.insert(name, version);
            }
            Some(versions)
        };
        let ToRead {
            versions: read,
            ids: read_ids,
            ..
        } = to_read;
        let (listings, icon_rows) = if read_ids.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            let restrict = read_ids.len() * 100 < total as usize * RESTRICT_BELOW_PERCENT;
            let rows = build_sql(query, restrict.then_some(&read_ids[..]))
                .build()
                .fetch_all(&mut *tx)
                .await?;
            let icon_rows: Vec<(String, String)> = if icons {
                sqlx::query_as(
                    "SELECT r.name, mi.icon_sha256 FROM manifest_icons mi
                     JOIN manifests m ON m.id = mi.manifest_id
                     JOIN repositories r ON r.id = m.repository_id
                     WHERE m.repository_id = ANY($1)",
                )
                .bind(&read_ids)
                .fetch_all(&mut *tx)
                .await?
            } else {
                Vec::new()
            };
            (assemble(rows)?, icon_rows)
        };
        tx.commit().await?;
        let mut icons: HashMap<RepositoryName, HashSet<String>> = HashMap::new();
        for (name, sha256) in icon_rows {
            icons
                .entry(rows::repository_name(&name)?)
                .or_default()
                .insert(sha256);
        }
        Ok(IndexPartsSnapshot {
            data_version,
            versions,
            // Unrestricted, the query also returns repositories that were not read.
            listings: listings
                .into_iter()
                .filter(|l| read.contains_key(&l.name))
                .collect(),
            read,
            icons,
        })
    }

    /// A read-only transaction on one snapshot, with the index query's time limit.
    async fn snapshot(&self) -> Result<sqlx::Transaction<'static, Postgres>, StoreError> {
        let mut tx = crate::store::begin(&self.pool).await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        // A runaway query must not hold a connection that other requests need.
        sqlx::query(&format!(
            "SET LOCAL statement_timeout = {}",
            self.statement_timeout
                .unwrap_or(INDEX_QUERY_TIMEOUT)
                .as_millis()
        ))
        .execute(&mut *tx)
        .await?;
        Ok(tx)
    }

    /// Runs `query` against one consistent snapshot. The returned data version is the one
    /// the listings belong to, so a cache keyed on it never mixes versions.
    pub async fn query_index(&self, query: &Query) -> Result<IndexSnapshot, StoreError> {
        let mut tx = self.snapshot().await?;
        let data_version: i64 = sqlx::query_scalar("SELECT version FROM data_version")
            .fetch_one(&mut *tx)
            .await?;
        let rows = build_sql(query, None).build().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(IndexSnapshot {
            data_version,
            listings: assemble(rows)?,
        })
    }
}

/// The index query; with `repository_ids`, only for those repositories.
fn build_sql(query: &Query, repository_ids: Option<&[i64]>) -> QueryBuilder<'static, Postgres> {
    // `top`: the tagged manifests selected by the tag and repository conditions, driven
    // from the (small, indexed) tags table and fetched by primary key (manifest rows are
    // wide: scanning them all costs more than a few thousand key lookups). `candidates`: each tagged image, and each
    // entry of each tagged list. The image conditions are then checked per candidate by
    // primary key: `OFFSET 0` keeps the planner from turning that into a scan of every
    // labelled image (it badly underestimates `labels ? key`), so the cost follows the
    // number of tagged candidates, not the size of the table.
    let mut qb = QueryBuilder::new(
        "WITH top AS MATERIALIZED (
           SELECT m.id, m.repository_id, m.digest, m.media_type, m.is_list,
                  ARRAY(SELECT t.tag FROM tags t WHERE t.manifest_id = m.id) AS tags
           FROM (SELECT DISTINCT t.manifest_id FROM tags t WHERE true",
    );
    if !query.tags.is_empty() {
        let tags: Vec<String> = query.tags.iter().map(|t| t.as_str().to_owned()).collect();
        qb.push(" AND t.tag = ANY(").push_bind(tags).push(")");
    }
    if !query.repositories.is_empty() {
        qb.push(" AND t.repository_id IN (SELECT r.id FROM repositories r WHERE r.name = ANY(")
            .push_bind(repository_names(query))
            .push("))");
    }
    if let Some(ids) = repository_ids {
        qb.push(" AND t.repository_id = ANY(")
            .push_bind(ids.to_vec())
            .push(")");
    }
    if !query.tag_patterns.is_empty() {
        let patterns: Vec<String> = query.tag_patterns.iter().map(|g| g.to_like()).collect();
        qb.push(" AND t.manifest_id IN (SELECT tp.manifest_id FROM tags tp WHERE tp.tag LIKE ANY(")
            .push_bind(patterns)
            .push("))");
    }
    qb.push(
        ") s CROSS JOIN LATERAL (SELECT * FROM manifests m WHERE m.id = s.manifest_id OFFSET 0) m
         ),
         candidates AS (
           SELECT top.*, top.id AS image_id, 0 AS position FROM top WHERE NOT top.is_list
           UNION ALL
           SELECT top.*, le.image_id, le.position
           FROM top JOIN list_entries le ON le.list_id = top.id WHERE top.is_list
         )
         SELECT r.name, c.digest, c.media_type, c.is_list, c.tags, c.position,
                im.digest, im.media_type, im.os, im.architecture, im.labels, im.annotations, im.config_digest
         FROM candidates c JOIN repositories r ON r.id = c.repository_id
         CROSS JOIN LATERAL (
           SELECT * FROM manifests im WHERE im.id = c.image_id",
    );
    push_image_conditions(&mut qb, query);
    qb.push(" OFFSET 0) im");
    qb
}

/// `<condition> = ANY(<the query's repositories>)` (`condition` as in ` WHERE name`),
/// when the query names repositories.
fn push_repository_filter(
    qb: &mut QueryBuilder<'static, Postgres>,
    query: &Query,
    condition: &'static str,
) {
    if !query.repositories.is_empty() {
        qb.push(condition)
            .push(" = ANY(")
            .push_bind(repository_names(query))
            .push(")");
    }
}

fn repository_names(query: &Query) -> Vec<String> {
    query
        .repositories
        .iter()
        .map(|r| r.as_str().to_owned())
        .collect()
}

/// `AND ...` conditions on image `im`, the SQL twin of `Query::matches_image`.
fn push_image_conditions(qb: &mut QueryBuilder<'static, Postgres>, query: &Query) {
    if !query.os.is_empty() {
        let os: Vec<String> = query.os.iter().cloned().collect();
        qb.push(" AND im.os = ANY(").push_bind(os).push(")");
    }
    if !query.architectures.is_empty() {
        let arch: Vec<String> = query.architectures.iter().cloned().collect();
        qb.push(" AND im.architecture = ANY(")
            .push_bind(arch)
            .push(")");
    }
    for (column, filters) in [
        ("im.labels", &query.labels),
        ("im.annotations", &query.annotations),
    ] {
        for (key, filter) in filters {
            push_key_conditions(qb, column, key, filter);
        }
    }
}

fn push_key_conditions(
    qb: &mut QueryBuilder<'static, Postgres>,
    column: &'static str,
    key: &str,
    filter: &KeyFilter,
) {
    if filter.exists {
        // `?` is jsonb's key-exists operator (sqlx uses $n placeholders for PostgreSQL).
        qb.push(format!(" AND {column} ? "))
            .push_bind(key.to_owned());
    }
    if !filter.equals.is_empty() {
        // Containment (`@>`) rather than `->> =` so that the GIN index applies.
        qb.push(" AND (");
        for (i, value) in filter.equals.iter().enumerate() {
            if i > 0 {
                qb.push(" OR ");
            }
            let object = serde_json::json!({ key: value });
            qb.push(format!("{column} @> ")).push_bind(object);
        }
        qb.push(")");
    }
    if !filter.matches.is_empty() {
        let patterns: Vec<String> = filter.matches.iter().map(|g| g.to_like()).collect();
        qb.push(format!(" AND ({column} ->> "))
            .push_bind(key.to_owned())
            .push(") LIKE ANY(")
            .push_bind(patterns)
            .push(")");
    }
}

type Lists = BTreeMap<Digest, (TaggedList, Vec<(i32, Image)>)>;

/// Groups the rows (one per image, tagged directly or a list entry) into listings.
fn assemble(rows: Vec<sqlx::postgres::PgRow>) -> Result<Vec<Listing>, StoreError> {
    let mut repositories: BTreeMap<String, (Vec<TaggedImage>, Lists)> = BTreeMap::new();
    for row in rows {
        let name: String = row.try_get(0)?;
        let top_digest: String = row.try_get(1)?;
        let top_media_type: String = row.try_get(2)?;
        let is_list: bool = row.try_get(3)?;
        let tags: Vec<String> = row.try_get(4)?;
        let position: i32 = row.try_get(5)?;
        let image = rows::image((
            row.try_get(6)?,
            row.try_get(7)?,
            row.try_get(8)?,
            row.try_get(9)?,
            row.try_get(10)?,
            row.try_get(11)?,
            row.try_get(12)?,
        ))?;
        let tags: Vec<Tag> = tags
            .iter()
            .map(|t| rows::tag(t))
            .collect::<Result<_, _>>()?;
        let (images, lists) = repositories.entry(name).or_default();
        if is_list {
            let digest = rows::digest(&top_digest)?;
            let (_, entries) = lists.entry(digest.clone()).or_insert_with(|| {
                (
                    TaggedList {
                        tags,
                        digest,
                        media_type: top_media_type,
                        entries: Vec::new(),
                    },
                    Vec::new(),
                )
            });
            entries.push((position, image));
        } else {
            images.push(TaggedImage { tags, image });
        }
    }
    repositories
        .into_iter()
        .map(|(name, (images, lists))| {
            Ok(Listing {
                name: rows::repository_name(&name)?,
                images,
                lists: lists
                    .into_values()
                    .map(|(mut list, mut entries)| {
                        entries.sort_by_key(|(position, _)| *position);
                        list.entries = entries.into_iter().map(|(_, image)| image).collect();
                        list
                    })
                    .collect(),
            })
        })
        .collect()
}
