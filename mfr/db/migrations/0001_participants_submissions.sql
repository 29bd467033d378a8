-- Participants, their submissions, and each submission's history.

CREATE TABLE participants (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name              text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    organisation      text NOT NULL DEFAULT '',
    hide_organisation boolean NOT NULL DEFAULT false,
    -- sha256 of the bearer token: the token itself is shown once and never stored.
    token_hash        text NOT NULL UNIQUE,
    is_baseline       boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE submissions (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    participant_id  uuid NOT NULL REFERENCES participants (id),
    challenge_id    text NOT NULL,
    track_id        text NOT NULL,
    state           text NOT NULL DEFAULT 'queued' CHECK (state IN (
                        'queued', 'validating', 'embedding', 'scoring', 'scored',
                        'rejected', 'failed', 'cancelled')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- calendar day of the challenge's time zone the submission counts against.
    quota_day       date NOT NULL,
    upload_bucket   text NOT NULL,
    upload_key      text NOT NULL,
    upload_sha256   text NOT NULL,
    upload_size     bigint NOT NULL,
    validation      jsonb,
    model_key       text,
    features_key    text,
    scores          jsonb,
    ranking_score   double precision,
    -- exact ranking score as a fraction "p/q", the source of truth for ordering.
    ranking_exact   text,
    model_size_mb   double precision,
    latency_ms      double precision,
    public          boolean NOT NULL DEFAULT false,
    error           text,
    error_code      text,
    -- dispatcher lease: whoever holds it drives the submission; a lapsed lease is taken over.
    lease_owner     text,
    lease_until     timestamptz,
    attempts        integer NOT NULL DEFAULT 0
);

CREATE INDEX submissions_by_participant ON submissions (participant_id, created_at DESC);
CREATE INDEX submissions_quota ON submissions (participant_id, quota_day);
CREATE INDEX submissions_pending ON submissions (state, lease_until)
    WHERE state IN ('queued', 'validating', 'embedding', 'scoring');
CREATE UNIQUE INDEX submissions_one_public ON submissions (participant_id, challenge_id, track_id)
    WHERE public;

CREATE TABLE submission_events (
    id             bigserial PRIMARY KEY,
    submission_id  uuid NOT NULL REFERENCES submissions (id) ON DELETE CASCADE,
    at             timestamptz NOT NULL DEFAULT now(),
    state          text NOT NULL,
    detail         jsonb NOT NULL DEFAULT '{}'::jsonb
);

CREATE INDEX submission_events_by_submission ON submission_events (submission_id, id);
