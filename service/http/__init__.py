"""The HTTP edge: routes, authentication, body reading, error rendering, per-request layer."""
