"""The two services as seen from here: the mem0 and OpenMemory adapters and the HTTP edge they share.

The only code that knows the vendors' JSON. Imports only the ground floor. See docs/architecture.md.
"""
