"""Ingest: raw crawls, document files and books -> clean text records and passages."""
