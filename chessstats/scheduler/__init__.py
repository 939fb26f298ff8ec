"""In-process job scheduler (croniter), runs recorded in SQLite."""
