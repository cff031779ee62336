"""The customer-success model: canonical columns over raw payloads and the SQL that publishes the cs tables."""
