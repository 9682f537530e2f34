"""Airflow reads its configuration when first imported: point it at a throwaway home."""

import os
import tempfile
from pathlib import Path

DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags"

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="airflow-home-"))
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS_FOLDER)
