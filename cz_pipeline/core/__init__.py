"""What every source shares: the HTTP client (retries, rate limits, auth refresh), records, timestamps."""
