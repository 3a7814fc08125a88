"""The study's sweeps (transfer versus standalone across fractions, rates, leads, domains, strategies) and
the report that reads them back from MLflow."""
