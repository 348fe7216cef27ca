"""Algorithms written on top of the DSL, one module each, citing the paper it implements."""
