"""Ingest: pages from a source into the raw tables (COPY, merge, cursor, one transaction), and the preflight of configured fields."""
