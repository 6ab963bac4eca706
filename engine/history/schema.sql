-- The engine's job history in PostgreSQL, fed by engine/history/shipper.py from the Redis outbox
-- streams. Applied by `JobLog.migrate()` / `python -m engine migrate` under an advisory lock;
-- every statement is idempotent, so running it again changes nothing.
--
-- Times are timestamptz; payload and result are the job's JSON (an invalid JSON text
-- arrives stored as a JSON string, so nothing is lost).

CREATE TABLE IF NOT EXISTS engine_schema_version (
    version    int PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS jobs (
    id           text PRIMARY KEY,
    queue_name   text NOT NULL,
    task_name    text NOT NULL DEFAULT '',
    payload      jsonb,                       -- {"args": [...], "kwargs": {...}}
    attempts     int NOT NULL DEFAULT 0,
    status       text NOT NULL,               -- waiting|delayed|active|completed|failed|cancelled
    result       jsonb,
    error        text,                        -- of the failed attempt or cancel that set the status
    traceback    text,                        -- (every failed attempt's is in job_logs)
    created_at   timestamptz NOT NULL,        -- until the enqueue event arrives: earliest time seen
    processed_at timestamptz,                 -- start of the last attempt
    finished_at  timestamptz,
    due_at       timestamptz,                 -- next run of a job waiting to be retried
    last_event   text NOT NULL,               -- type of the event the row reflects
    version      bigint NOT NULL DEFAULT 0,   -- "v" of that event; 0: known only from a log line
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- History pages are newest first, (created_at, id) descending, with keyset pagination.
CREATE INDEX IF NOT EXISTS jobs_created_idx ON jobs (created_at DESC, id DESC);
-- Failed (or any status) jobs of a queue, newest first.
CREATE INDEX IF NOT EXISTS jobs_queue_status_created_idx
    ON jobs (queue_name, status, created_at DESC, id DESC);
-- Search by task and time.
CREATE INDEX IF NOT EXISTS jobs_task_created_idx ON jobs (task_name, created_at DESC, id DESC);
-- Retention (JobLog.prune) walks jobs_queue_status_created_idx: the index it had of its own,
-- on (status, finished_at), cost every write of a row a tenth of PostgreSQL's time.
DROP INDEX IF EXISTS jobs_status_finished_idx;

CREATE TABLE IF NOT EXISTS job_logs (
    id        bigserial PRIMARY KEY,
    job_id    text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    content   text NOT NULL,
    level     text NOT NULL,
    logged_at timestamptz NOT NULL,
    -- The outbox entry id that produced the row: re-shipping an entry is a no-op. Entry ids
    -- are unique per outbox stream (one per queue) and a job lives in one queue, so the
    -- pair (job_id, event_id) is unique where event_id alone could repeat across queues.
    event_id  text NOT NULL,
    CONSTRAINT job_logs_event_key UNIQUE (job_id, event_id)
);

-- A job's log lines in order (also serves the ON DELETE CASCADE lookups).
CREATE INDEX IF NOT EXISTS job_logs_job_idx ON job_logs (job_id, id);

-- A tombstone per job deleted (a delete, a dead-letter purge) by its "deleted" outbox event:
-- the event's entry id (ms-seq). An event of the job from that entry or an earlier one can
-- reach PostgreSQL after the deletion (shippers work side by side; a dead one's entries are
-- taken over later): it is dropped instead of writing the job again. Pruned after a week.
CREATE TABLE IF NOT EXISTS deleted_jobs (
    id         text PRIMARY KEY,
    queue_name text NOT NULL,
    entry_ms   bigint NOT NULL,
    entry_seq  bigint NOT NULL,
    deleted_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS deleted_jobs_deleted_idx ON deleted_jobs (deleted_at);
