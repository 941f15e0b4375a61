-- regindex schema. Applied by `regindexctl migrate` (Store::migrate) inside one transaction
-- holding an advisory lock, so concurrent migrations serialise.
--
-- Safe to re-apply: every statement is CREATE ... IF NOT EXISTS or an idempotent upsert,
-- nothing here ever drops or rewrites data. A future version adds statements below and
-- raises the recorded version (Store::SCHEMA_VERSION).

-- One row: the schema version this database has been migrated to.
CREATE TABLE IF NOT EXISTS regindex_schema (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version integer NOT NULL
);

-- One row: bumped in the same transaction as every change that index queries can see,
-- so a reader that sees version N sees exactly the data of version N (API caches key on it).
CREATE TABLE IF NOT EXISTS data_version (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version bigint NOT NULL
);
INSERT INTO data_version (singleton, version) VALUES (true, 1) ON CONFLICT (singleton) DO NOTHING;

CREATE TABLE IF NOT EXISTS repositories (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE
);

-- Images and image lists, per repository: the same digest pushed to two repositories is
-- stored twice, which keeps every refetch and deletion local to one repository.
CREATE TABLE IF NOT EXISTS manifests (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    repository_id bigint NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest text NOT NULL,
    media_type text NOT NULL,
    is_list boolean NOT NULL,
    -- Images only ('' for lists): Go-style values from the image config.
    os text NOT NULL DEFAULT '',
    architecture text NOT NULL DEFAULT '',
    -- Images: config.Labels; lists: always {}.
    labels jsonb NOT NULL DEFAULT '{}'::jsonb,
    annotations jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- NULL for lists.
    config_digest text,
    UNIQUE (repository_id, digest),
    CHECK (is_list = (config_digest IS NULL))
);
-- jsonb_ops (not jsonb_path_ops) so that both `labels ? key` (label:K:exists) and
-- `labels @> '{"K":"V"}'` (label:K=V) can use the index.
CREATE INDEX IF NOT EXISTS manifests_labels_idx ON manifests USING gin (labels);
CREATE INDEX IF NOT EXISTS manifests_annotations_idx ON manifests USING gin (annotations);

-- Entries of an image list, in the order of the index. image_id references an image of
-- the same repository; a stored list always has all its entries stored.
CREATE TABLE IF NOT EXISTS list_entries (
    list_id bigint NOT NULL REFERENCES manifests (id) ON DELETE CASCADE,
    position integer NOT NULL,
    image_id bigint NOT NULL REFERENCES manifests (id),
    PRIMARY KEY (list_id, position)
);
CREATE INDEX IF NOT EXISTS list_entries_image_idx ON list_entries (image_id);

CREATE TABLE IF NOT EXISTS tags (
    repository_id bigint NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    tag text NOT NULL,
    manifest_id bigint NOT NULL REFERENCES manifests (id),
    PRIMARY KEY (repository_id, tag)
);
CREATE INDEX IF NOT EXISTS tags_manifest_idx ON tags (manifest_id);
-- `tag=latest` across all repositories.
CREATE INDEX IF NOT EXISTS tags_tag_idx ON tags (tag);

-- Icons taken out of `data:` URIs in org.freedesktop.appstream.icon-* labels and
-- annotations, named by the sha256 of their bytes (served at /icons/<sha256>.<ext>).
CREATE TABLE IF NOT EXISTS icons (
    sha256 text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    content_type text NOT NULL,
    data bytea NOT NULL
);

-- Which image carries which icon under which key. Written in the repository's refetch
-- transaction; rows go with their manifest, and icons no row references any more are
-- garbage-collected (Store::gc_icons).
CREATE TABLE IF NOT EXISTS manifest_icons (
    manifest_id bigint NOT NULL REFERENCES manifests (id) ON DELETE CASCADE,
    key text NOT NULL,
    icon_sha256 text NOT NULL REFERENCES icons (sha256),
    PRIMARY KEY (manifest_id, key)
);
CREATE INDEX IF NOT EXISTS manifest_icons_icon_idx ON manifest_icons (icon_sha256);

-- What people see of a repository (web page) and what search matches, derived from its
-- images' labels and annotations (describe.rs) and rewritten in each refetch transaction
-- that changes the repository.
CREATE TABLE IF NOT EXISTS repository_summaries (
    repository_id bigint PRIMARY KEY REFERENCES repositories (id) ON DELETE CASCADE,
    name text NOT NULL,
    title text NOT NULL,
    description text NOT NULL,
    flatpak_id text,
    -- `<sha256>.<ext>` of a stored icon, or an http(s) URL; NULL when none.
    icon text,
    -- Last path component: `calc` ranks `apps/calc` above `apps/calculator-extras`.
    short_name text GENERATED ALWAYS AS (regexp_replace(name, '^.*/', '')) STORED,
    -- Names split at / . _ - so that their parts are words; titles in both 'simple' (for
    -- prefix matches on the words as written) and 'english' (stemmed, for web-style search).
    document tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('simple'::regconfig, translate(name, '/._-', '    ')), 'A')
        || setweight(to_tsvector('simple'::regconfig, translate(coalesce(flatpak_id, ''), '._-', '   ')), 'A')
        || setweight(to_tsvector('simple'::regconfig, title), 'A')
        || setweight(to_tsvector('english'::regconfig, title), 'A')
        || setweight(to_tsvector('english'::regconfig, description), 'B')
        || setweight(to_tsvector('simple'::regconfig, description), 'C')
    ) STORED
);
CREATE INDEX IF NOT EXISTS repository_summaries_document_idx ON repository_summaries USING gin (document);

-- ============================================================================
-- History: registry activity and statistics (regindex/src/history/, docs/history.md).
-- Owned by the history feature; every statement is idempotent, nothing is dropped.
-- Rows are keyed by (registry, repository, ...), registry being the canonical host
-- after alias normalisation (history.aliases).
-- ============================================================================

-- Every recorded event: the raw activity log, and the ids that make a redelivered
-- message change nothing (inserted with ON CONFLICT DO NOTHING; only new ids count).
-- Pruned after history.event_retention_days.
CREATE TABLE IF NOT EXISTS history_events (
    event_id text PRIMARY KEY,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    activity text NOT NULL,
    registry text NOT NULL,
    repository text NOT NULL,
    tag text,
    digest text,
    media_type text,
    size bigint,
    actor text,
    addr text,
    method text
);
CREATE INDEX IF NOT EXISTS history_events_received_idx ON history_events (received_at);

-- Tags as the registry reported them (or a backfill scan found them).
CREATE TABLE IF NOT EXISTS history_tags (
    registry text NOT NULL,
    repository text NOT NULL,
    tag text NOT NULL,
    -- Where the tag pointed when last seen (pushed, pulled by tag, or scanned), and when.
    digest text,
    digest_seen_at timestamptz,
    first_seen timestamptz NOT NULL DEFAULT now(),
    first_pushed timestamptz,
    last_pushed timestamptz,
    push_count bigint NOT NULL DEFAULT 0,
    last_pulled timestamptz,
    pull_count bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (registry, repository, tag)
);
CREATE INDEX IF NOT EXISTS history_tags_digest_idx ON history_tags (registry, repository, digest);

CREATE TABLE IF NOT EXISTS history_manifests (
    registry text NOT NULL,
    repository text NOT NULL,
    digest text NOT NULL,
    media_type text,
    size bigint,
    first_seen timestamptz NOT NULL DEFAULT now(),
    first_pushed timestamptz,
    last_pushed timestamptz,
    push_count bigint NOT NULL DEFAULT 0,
    last_pulled timestamptz,
    pull_count bigint NOT NULL DEFAULT 0,
    -- Its blobs are recorded in history_manifest_blobs (from the event's references or
    -- from the manifest fetched by a refetch/backfill).
    links_known boolean NOT NULL DEFAULT false,
    PRIMARY KEY (registry, repository, digest)
);

-- Blobs (layers, configs) per repository: the registry links blobs per repository, and
-- reports pushes, mounts and pulls per repository.
CREATE TABLE IF NOT EXISTS history_blobs (
    registry text NOT NULL,
    repository text NOT NULL,
    digest text NOT NULL,
    media_type text,
    size bigint,
    first_seen timestamptz NOT NULL DEFAULT now(),
    first_pushed timestamptz,
    last_pushed timestamptz,
    push_count bigint NOT NULL DEFAULT 0,
    mount_count bigint NOT NULL DEFAULT 0,
    last_pulled timestamptz,
    pull_count bigint NOT NULL DEFAULT 0,
    -- 'event': the registry reported it; 'scan': only a manifest fetched by a backfill
    -- names it.
    source text NOT NULL DEFAULT 'event',
    PRIMARY KEY (registry, repository, digest)
);

CREATE TABLE IF NOT EXISTS history_manifest_blobs (
    registry text NOT NULL,
    repository text NOT NULL,
    manifest_digest text NOT NULL,
    blob_digest text NOT NULL,
    media_type text,
    size bigint,
    PRIMARY KEY (registry, repository, manifest_digest, blob_digest)
);
CREATE INDEX IF NOT EXISTS history_manifest_blobs_blob_idx
    ON history_manifest_blobs (registry, repository, blob_digest);

-- Pushes and pulls per repository and UTC day.
CREATE TABLE IF NOT EXISTS history_daily (
    registry text NOT NULL,
    repository text NOT NULL,
    day date NOT NULL,
    manifest_pushes bigint NOT NULL DEFAULT 0,
    manifest_pulls bigint NOT NULL DEFAULT 0,
    blob_pushes bigint NOT NULL DEFAULT 0,
    blob_pulls bigint NOT NULL DEFAULT 0,
    deletes bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (registry, repository, day)
);

-- The deletion audit trail: deleted rows move here with who deleted them and from where.
-- Pruned after history.audit_retention_days.
CREATE TABLE IF NOT EXISTS history_deletions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    deleted_at timestamptz NOT NULL,
    registry text NOT NULL,
    repository text NOT NULL,
    -- 'tag', 'manifest' or 'blob'
    kind text NOT NULL,
    tag text,
    digest text,
    actor text,
    addr text,
    event_id text,
    -- The row as it was before the delete (NULL when nothing was recorded for it).
    record jsonb
);
CREATE INDEX IF NOT EXISTS history_deletions_repository_idx
    ON history_deletions (repository, deleted_at, id);
CREATE INDEX IF NOT EXISTS history_deletions_time_idx ON history_deletions (deleted_at, id);
-- ============================================================================
-- End of history.
-- ============================================================================

-- Version 2: repositories Bodhi update messages named, refetched first after a compose
-- (bodhi.recent_update_secs; older rows are deleted when new ones are recorded).
CREATE TABLE IF NOT EXISTS bodhi_update_repositories (
    repository text PRIMARY KEY,
    update_alias text NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS bodhi_update_repositories_seen_idx
    ON bodhi_update_repositories (seen_at);

-- Version 3: the worker's periodic jobs (full scan, garbage collection): when each last
-- succeeded, so that their schedule survives restarts and is shared by every worker
-- process. A worker that starts when a job is overdue (or never ran) runs it at once.
CREATE TABLE IF NOT EXISTS periodic_jobs (
    job text PRIMARY KEY,
    last_success_at timestamptz NOT NULL
);

-- Version 4: icons are deleted only a grace period after the garbage collection first
-- found them unreferenced (cached answers may still point at them); NULL while referenced.
ALTER TABLE icons ADD COLUMN IF NOT EXISTS unreferenced_since timestamptz;
CREATE INDEX IF NOT EXISTS icons_unreferenced_idx ON icons (unreferenced_since)
    WHERE unreferenced_since IS NOT NULL;

-- Version 5: tag_problems and repository_refetches (the fetch-first refetch, issue 8/9).
-- Tags a refetch could not use (an image config that is not JSON, a manifest that cannot
-- be parsed, ...), or used only in part (an image list with unusable entries), as of the
-- repository's last refetch: what `regindexctl problems`, the repository's web page and
-- the worker's `regindex_worker_tag_problems` gauge show. Keyed by repository name, not
-- id: a repository whose every tag is unusable has no `repositories` row. A refetch that
-- finds a tag still pointing at `digest` does not fetch it again; a tag that moves gets
-- a fresh look, and the row goes once the tag is usable or gone.
CREATE TABLE IF NOT EXISTS tag_problems (
    repository text NOT NULL,
    tag text NOT NULL,
    -- The manifest the tag points at.
    digest text NOT NULL,
    reason text NOT NULL,
    -- true: the tag is indexed without the parts the reason names; false: not indexed.
    partial boolean NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (repository, tag)
);

-- Orders refetches of one repository: each takes a ticket before it lists the tags, and
-- writes only if no refetch with a later ticket (a later listing) has written already.
CREATE SEQUENCE IF NOT EXISTS refetch_tickets;
CREATE TABLE IF NOT EXISTS repository_refetches (
    repository text PRIMARY KEY,
    -- The ticket of the refetch whose listing the stored state shows.
    ticket bigint NOT NULL
);

-- Version 6: each repository's own version (issue 13): the data version of the commit
-- that last changed what index queries see of it, written by that commit. Answers are
-- cached per repository keyed on it, so a push re-renders only its own repository. A
-- repository removed and added again gets a new row, and with it a newer version.
-- Existing rows start at 0: caches live in memory, and start empty.
ALTER TABLE repositories ADD COLUMN IF NOT EXISTS changed_version bigint NOT NULL DEFAULT 0;

-- Record the version last: never lower it (re-applying an older file keeps the newer mark).
INSERT INTO regindex_schema (singleton, version) VALUES (true, 6)
ON CONFLICT (singleton) DO UPDATE SET version = GREATEST(regindex_schema.version, EXCLUDED.version);
