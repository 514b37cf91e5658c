"""MLflow tracking, a built-in lifecycle plugin (filled in by the tracking issue)."""
