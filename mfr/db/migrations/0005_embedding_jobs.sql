-- Embedding at scale (docs/embedder.md): a submission's embedding is a job, cut
-- into one task per test-set shard on the procrastinate queue; any number of
-- embedder workers drain it. These rows are the truth about what is done: a
-- shard is done when the UPDATE that sets its done_at succeeds, and that UPDATE
-- is the only place the job's shards_done grows, so a shard finished twice
-- counts once and exactly one worker sees the job complete.

CREATE TABLE embedding_jobs (
    -- Chosen by the caller (the submission id, with the run): SubmitJob is idempotent.
    id                text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$'),
    state             text NOT NULL DEFAULT 'queued'
                          CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    -- Whose job (the participant): fair shares are per job, this is for people and metrics.
    owner             text NOT NULL DEFAULT '',
    model_bucket      text NOT NULL,
    model_key         text NOT NULL,
    model_sha256      text NOT NULL,
    testset_id        text NOT NULL,
    input_mean        double precision NOT NULL,
    input_std         double precision NOT NULL CHECK (input_std <> 0),
    features_bucket   text NOT NULL,
    features_key      text NOT NULL,
    -- The challenge's runtime ("onnxruntime-cpu", "torch-cuda", ...) and batch size.
    runtime           text NOT NULL,
    batch_size        integer NOT NULL CHECK (batch_size >= 1),
    -- Seconds a worker may spend on one shard before the model is declared hung.
    shard_deadline_s  double precision NOT NULL CHECK (shard_deadline_s > 0),
    -- sha256 of the request: the same job id with another request is a conflict.
    request_sha256    text NOT NULL,
    shards_total      integer NOT NULL CHECK (shards_total >= 1),
    -- Counted once per shard by the UPDATE that marks the shard done.
    shards_done       integer NOT NULL DEFAULT 0 CHECK (shards_done BETWEEN 0 AND shards_total),
    images_total      bigint NOT NULL,
    images_done       bigint NOT NULL DEFAULT 0,
    -- What actually ran (the runtime, its version, the device), set by the first shard;
    -- every later shard must match it, so one job never mixes runtimes.
    runtime_used      jsonb,
    feature_dim       integer,
    non_finite_rows   bigint,
    features_sha256   text,
    features_size     bigint,
    assemble_task_id  bigint,
    assemble_failures integer NOT NULL DEFAULT 0,
    error             text,
    error_code        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz
);

CREATE INDEX embedding_jobs_active ON embedding_jobs (created_at)
    WHERE state IN ('queued', 'running');

CREATE TABLE embedding_shards (
    job_id            text NOT NULL REFERENCES embedding_jobs (id) ON DELETE CASCADE,
    shard             integer NOT NULL CHECK (shard >= 0),
    images            integer NOT NULL CHECK (images >= 1),
    -- The shard's place in the fair order (start-time fair queuing; docs/embedder.md).
    fair_key          bigint NOT NULL,
    task_id           bigint,
    -- The batch size this shard runs at: the job's, halved after each out-of-memory.
    batch_size        integer NOT NULL CHECK (batch_size >= 1),
    failures          integer NOT NULL DEFAULT 0,
    last_error        text,
    part_sha256       text,
    non_finite_rows   integer,
    feature_dim       integer,
    started_at        timestamptz,
    done_at           timestamptz,
    done_by           text,
    seconds           double precision,
    PRIMARY KEY (job_id, shard)
);

-- Shards still to do: the queue-depth gauges and cancellation read these.
CREATE INDEX embedding_shards_pending ON embedding_shards (job_id) WHERE done_at IS NULL;

-- What embedded a submission's features (runtime, version, device, batch size),
-- shown on its page beside the scores.
ALTER TABLE submissions ADD COLUMN embedding jsonb;
-- sha256 of the model as evaluated (the validator's stored copy, batch made dynamic
-- where needed): the embedder workers check what they fetch against it.
ALTER TABLE submissions ADD COLUMN model_sha256 text;
