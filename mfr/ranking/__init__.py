"""Ranking rules without storage: exact ranking scores, the public-entry rule, board exports."""
