"""Building CDS cards: text templates, draft-order rewriting, and the one card builder."""
