-- One trail per submission (docs/operations.md, "Following one submission"): the
-- X-Request-Id of the upload that created it. The dispatcher binds it to every
-- log line it writes about the submission and forwards it on every call, so an
-- operator greps one id and sees the whole path. NULL for rows made before.
ALTER TABLE submissions ADD COLUMN request_id text;
