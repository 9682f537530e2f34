"""Loading and generating interaction data: files and synthetic sets into the
interactions table (``load``, ``generate``), and the table in bulk (``store``)."""
