"""Products built on the synced data: win-loss imports (Salesforce) and sales incentives (Close)."""
