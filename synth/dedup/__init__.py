"""Exact and near-duplicate removal across all shards of a run (`dedup_exact`, `dedup_minhash`)."""
