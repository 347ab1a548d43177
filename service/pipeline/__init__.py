"""The hook-call pipeline as named steps, the services it answers, and its start-up warm-up."""
