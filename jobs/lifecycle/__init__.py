"""The model registry and lifecycle: every trained version, its provenance and gates,
and every change of its status (candidate, shadow, canary, serving, retired,
rejected, rolled back), with who made it and why. Nothing else changes a status."""
