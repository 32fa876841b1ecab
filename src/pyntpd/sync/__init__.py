"""Synchronisation core: filter, select, discipline, leap and poll policy, the engine (pure)."""
