"""The reference servers the service is measured against: the ceiling and the tutorial baseline."""
