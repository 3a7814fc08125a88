"""MLflow plumbing: tracking store checks, runs, weights with their metadata."""
