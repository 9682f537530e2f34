"""Data contracts, as code: the Great Expectations gates on inputs and predictions
(``engine``, ``inputs``, ``predictions``, with the suites in ``schemas/``), the Redis
key/value format readers rely on (``redis``) and which users a canary serves
(``canary``)."""
