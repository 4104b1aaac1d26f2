"""Store stage: the SQLite index of what was received and the study job queue."""
