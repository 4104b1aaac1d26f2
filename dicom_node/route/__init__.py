"""Route stage: series and study completion, series classification and the routing rules."""
