"""Operations: Prometheus metrics, the health endpoint and logging set-up."""
