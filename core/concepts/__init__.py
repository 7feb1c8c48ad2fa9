"""Concepts: named sets of units at a layer, with their "on" values (see record.py)."""
