"""The pieces every stage shares: settings (``config``), the embedded servers
(``services``), database connections, advisory locks and migrations (``db``), the
Spark session (``spark``), who ran what at which code version (``provenance``),
artifact paths and checksums (``artifacts``), the run history with its leases
(``runs``) and how long steps show their progress (``progress``)."""
