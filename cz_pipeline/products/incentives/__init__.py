"""Sales incentives: participants, per-rep daily activity and the pipeline by status."""
