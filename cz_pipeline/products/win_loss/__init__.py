"""Win-loss: rule-based imports of closed opportunities with their participants."""
