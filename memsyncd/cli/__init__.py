"""memsyncctl's face: argv → fast paths (stdlib only) or commands (engine loaded lazily) → rendered text.

Modules: ``fast`` (status / enqueue / hook over the daemon's socket or the queue file, stdlib only,
through :mod:`memsyncd.wire_http`), ``parser`` (the argparse grammar), ``render`` (the seed's text blocks),
``output`` (stdout/stderr writers and error mapping), ``hook`` (the Claude Code PostToolUse hook),
``commands`` (everything that needs the engine). Only ``commands`` may import third-party libraries.
"""
