"""Filters whose scores come from a language model (`LLMFilter` subclasses)."""
