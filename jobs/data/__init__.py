"""Loading and generating interaction data."""
