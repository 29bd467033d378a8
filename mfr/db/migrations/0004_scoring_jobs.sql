-- Distributed scoring (docs/scoring-service.md): a job, its rounds, and the tiles of
-- each round. The tile tasks themselves live in procrastinate's tables (0003); these
-- rows are the truth about what is done, so a tile finished twice counts once.

CREATE TABLE scoring_jobs (
    -- Chosen by the caller (the submission id, with the run): SubmitJob is idempotent.
    id                  text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$'),
    state               text NOT NULL DEFAULT 'queued'
                            CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    -- What a person is told the job is doing: queued, planning, scoring, merging, ...
    stage               text NOT NULL DEFAULT 'queued',
    features_bucket     text NOT NULL,
    features_key        text NOT NULL,
    features_sha256     text NOT NULL DEFAULT '',
    testset_id          text NOT NULL,
    challenge_toml      text NOT NULL,
    -- sha256 of the request: the same job id with another request is a conflict.
    request_sha256      text NOT NULL,
    -- The round being scored (0 until planned).
    round               integer NOT NULL DEFAULT 0,
    -- Failures of the plan and merge steps (tile failures are counted per tile).
    step_failures       integer NOT NULL DEFAULT 0,
    plan_task_id        bigint,
    scores              jsonb,
    ranking_score       double precision,
    ranking_exact       text,
    result_bucket       text,
    result_key          text,
    result_sha256       text,
    result_size         bigint,
    error               text,
    error_code          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    -- First tile started (rates and ETA count from here, not from the queue wait).
    scoring_started_at  timestamptz,
    finished_at         timestamptz
);

CREATE INDEX scoring_jobs_active ON scoring_jobs (created_at) WHERE state IN ('queued', 'running');

CREATE TABLE scoring_rounds (
    job_id          text NOT NULL REFERENCES scoring_jobs (id) ON DELETE CASCADE,
    round           integer NOT NULL CHECK (round >= 1),
    plan_key        text NOT NULL,
    plan_digest     text NOT NULL,
    tiles_total     integer NOT NULL CHECK (tiles_total >= 0),
    -- Counted once per tile by the UPDATE that marks the tile done.
    tiles_done      integer NOT NULL DEFAULT 0 CHECK (tiles_done BETWEEN 0 AND tiles_total),
    pairs_total     bigint NOT NULL,
    pairs_done      bigint NOT NULL DEFAULT 0,
    merge_task_id   bigint,
    -- Protocols proven by this round's merge: {id: result JSON}.
    results         jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    merged_at       timestamptz,
    PRIMARY KEY (job_id, round)
);

CREATE TABLE scoring_tiles (
    job_id          text NOT NULL,
    round           integer NOT NULL,
    -- Position in the plan's tile list; tile_key is the engine's Tile.key.
    ordinal         integer NOT NULL CHECK (ordinal >= 0),
    tile_key        text NOT NULL,
    pairs           bigint NOT NULL,
    task_id         bigint,
    partial_key     text NOT NULL,
    partial_sha256  text,
    failures        integer NOT NULL DEFAULT 0,
    last_error      text,
    done_at         timestamptz,
    done_by         text,
    -- The engine's time on the tile, and the whole step's (fetch, upload, bookkeeping).
    compute_s       double precision,
    step_s          double precision,
    PRIMARY KEY (job_id, round, ordinal),
    FOREIGN KEY (job_id, round) REFERENCES scoring_rounds (job_id, round) ON DELETE CASCADE
);

-- Tiles still to do: the queue-depth gauge and cancellation read these.
CREATE INDEX scoring_tiles_pending ON scoring_tiles (job_id) WHERE done_at IS NULL;
