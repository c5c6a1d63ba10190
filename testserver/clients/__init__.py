"""Clients of the protocol: the library, the terminal commands, JSON output, the editor bridge."""
