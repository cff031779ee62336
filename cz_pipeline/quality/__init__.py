"""Data-quality checks that gate the cs tables: specs, candidate SQL, Great Expectations runtime."""
