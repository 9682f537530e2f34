"""Data contracts, as code: the Great Expectations gates on inputs, predictions and
item and user metadata files (``engine``, ``inputs``, ``predictions``, ``metadata``,
with the suites in ``schemas/``), the Redis key/value format readers rely on
(``redis``) and which users a canary serves (``canary``)."""
