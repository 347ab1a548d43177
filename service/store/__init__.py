"""Durable state: the database, the card audit writer, feedback, snoozes, the JWT replay
ledger, the feedback report and the schema migrations."""
