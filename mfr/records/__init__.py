"""The one owner of the participant journey's tables: participants, submissions,
submission_events and leaderboard_snapshots. No other code has SQL on them
(docs/architecture.md, "One owner per table")."""
