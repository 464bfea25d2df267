"""Admin surfaces: the gRPC admin API, HTTP health, metrics and debug endpoints."""
