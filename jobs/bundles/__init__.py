"""MLeap Bundle.ML files: export from Spark, and score them in pure Python.

A trained model is also written as an MLeap bundle (JSON format, zipped) so
that it can be scored without Spark or a JVM. The modules:

- ``format``: the bundle layout (``bundle.json``, ``node.json``, ``model.json``,
  tree files) and the encoding of attribute values.
- ``leapframe``: reading and writing MLeap's LeapFrame JSON (schema + rows).
- ``ops``: one transformer per MLeap op, following MLeap's runtime semantics.
- ``reader``: loads a bundle (zip or directory) into a transformer and scores
  a LeapFrame with it.
- ``export``: Spark models (``ALSModel``, ``PipelineModel``) to bundles.
- ``parity``: the gate that checks a bundle scores like Spark does, and the
  three-way check that adds MLeap's own runtime.
- ``mleap_runtime``: MLeap's JVM runtime (0.20.0, the Java program in ``jvm/``)
  in a subprocess, scoring bundles as a second opinion.

The reader modules import neither pyspark nor a JVM; Spark is imported only
inside the export and parity functions.
"""
