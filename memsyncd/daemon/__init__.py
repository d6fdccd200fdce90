"""``memsyncd run``: the process, one service per root, the control socket and its server.

Wires watchdog, APScheduler and the socket server around the engine. See docs/architecture.md.
"""
