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

-- Record the version last: never lower it (re-applying an older file keeps the newer mark).
INSERT INTO regindex_schema (singleton, version) VALUES (true, 1)
ON CONFLICT (singleton) DO UPDATE SET version = GREATEST(regindex_schema.version, EXCLUDED.version);
