"""CDS Hooks 2.0 wire models (spec objects only; no service logic)."""
