-- The participant's journey: re-runs, progress, dispatcher back-off, frozen boards,
-- and notifications so that watchers (dispatcher, WatchLeaderboard) wake at once.

-- A re-run starts a new run of the same submission; job ids of the embedder and
-- the scorer carry the run, so a re-run never picks up a finished job of the last.
ALTER TABLE submissions ADD COLUMN run integer NOT NULL DEFAULT 1 CHECK (run >= 1);
-- Latest progress of the running stage (done, total, unit, rate, eta_seconds, stage).
ALTER TABLE submissions ADD COLUMN progress jsonb;
-- Back-off after a transient error: no dispatcher claims the submission before this.
ALTER TABLE submissions ADD COLUMN next_attempt_at timestamptz;
-- The scorer's full result JSON (with ROC points) in the results bucket.
ALTER TABLE submissions ADD COLUMN result_key text;
ALTER TABLE submissions ADD COLUMN scored_at timestamptz;

-- The final board of a track, recorded once by the organiser's freeze (or
-- automatically once the challenge closed and every in-time submission finished).
CREATE TABLE leaderboard_snapshots (
    challenge_id  text NOT NULL,
    track_id      text NOT NULL,
    frozen_at     timestamptz NOT NULL DEFAULT now(),
    frozen_by     text NOT NULL DEFAULT 'organiser',
    board         jsonb NOT NULL,
    PRIMARY KEY (challenge_id, track_id)
);

CREATE INDEX submissions_board ON submissions (challenge_id, track_id)
    WHERE state = 'scored';

-- 'mfr_leaderboard' carries "challenge_id/track_id" whenever a board may have changed;
-- 'mfr_submissions' carries the submission id whenever one is (re)queued.
CREATE FUNCTION mfr_notify_submission() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state
       OR NEW.public IS DISTINCT FROM OLD.public
       OR NEW.ranking_exact IS DISTINCT FROM OLD.ranking_exact THEN
        PERFORM pg_notify('mfr_leaderboard', NEW.challenge_id || '/' || NEW.track_id);
    END IF;
    IF NEW.state = 'queued' AND (TG_OP = 'INSERT' OR OLD.state IS DISTINCT FROM 'queued'
                                 OR NEW.run IS DISTINCT FROM OLD.run) THEN
        PERFORM pg_notify('mfr_submissions', NEW.id::text);
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER submissions_notify AFTER INSERT OR UPDATE ON submissions
    FOR EACH ROW EXECUTE FUNCTION mfr_notify_submission();

CREATE FUNCTION mfr_notify_snapshot() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('mfr_leaderboard', OLD.challenge_id || '/' || OLD.track_id);
    ELSE
        PERFORM pg_notify('mfr_leaderboard', NEW.challenge_id || '/' || NEW.track_id);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER leaderboard_snapshots_notify AFTER INSERT OR UPDATE OR DELETE
    ON leaderboard_snapshots FOR EACH ROW EXECUTE FUNCTION mfr_notify_snapshot();

-- A participant's name or organisation visibility shows on every board they are on.
CREATE FUNCTION mfr_notify_participant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('mfr_leaderboard', '*');
    RETURN NULL;
END $$;

CREATE TRIGGER participants_notify AFTER UPDATE OF name, organisation, hide_organisation
    ON participants FOR EACH ROW EXECUTE FUNCTION mfr_notify_participant();
