"""Admission to the upstream: who may call it, and when, so the organisation stays under the caps."""
