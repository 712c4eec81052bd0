"""`singledir stats` (filled in by the statistics work)."""
