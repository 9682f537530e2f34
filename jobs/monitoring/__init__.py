"""Monitoring: what happens after publish. Each nightly's metrics (realized
quality, input and prediction drift), the levels they are held to, the alerts
and retraining signal they raise, and the run report."""
