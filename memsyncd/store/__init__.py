"""Files on disk: a root's queue and state DB, the roots registry, where things live, and the run locks.

Imports only the ground floor (models, errors, ids, timestamps, logs). See docs/architecture.md.
"""
