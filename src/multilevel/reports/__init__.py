"""Renderers: they format a Fit's numbers and never compute statistics."""
