-- Platform faults cost participants nothing (mfr/faults.py): a submission whose
-- embedding or scoring job failed for a platform reason is retried with a new
-- job (the job id carries the retry number, so the failed job stays on record),
-- at most MFR_DISPATCH_PLATFORM_RETRIES times; this counts them per run.
ALTER TABLE submissions ADD COLUMN retries integer NOT NULL DEFAULT 0 CHECK (retries >= 0);

