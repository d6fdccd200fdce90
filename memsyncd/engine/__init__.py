"""The sans-IO sync core: pure decisions over plain dataclasses."""
