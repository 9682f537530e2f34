"""Loading and generating interaction data: files and synthetic sets into the
interactions table (``load``, ``generate``), the table in bulk (``store``), and
item and user metadata files into their tables (``metadata``)."""
