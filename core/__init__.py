"""Shared types, settings, filters and errors: the inward-facing heart every stage imports."""
