"""Upstream adapters. Each yields normalised deltas (``worker.providers.base``)."""
