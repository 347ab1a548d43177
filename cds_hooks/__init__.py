"""The CDS Hooks 2.0 protocol layer: wire models, hook contexts, prefetch, FHIR fallback, JWT
trust, feedback and protocol errors. Reusable: it imports nothing from ``service``."""
