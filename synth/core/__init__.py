"""The pipeline framework: stages, run directory, ledger and executors."""
