"""Run stage: the supervised worker process, the pipelines it runs and the volume loader."""
