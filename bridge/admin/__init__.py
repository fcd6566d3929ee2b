"""The admin endpoint: health, readiness, Prometheus metrics and the routes view."""
