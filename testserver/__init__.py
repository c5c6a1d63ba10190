"""testserver: a persistent, interactive test server speaking subunit v2 (with the 2.1 extension).

The package is layered; imports flow one way, from the wire up:

- ``testserver.wire``: the sans-I/O protocol core (command framing, subunit 2.1 codec,
  control events). Bytes in, events out; events in, bytes out.
- the test layer (``loading``, ``results``, ``capture``, ``execution``): discover tests once,
  run a batch, turn outcomes into subunit events.
- the process layer (``worker``, ``server``, ``oneshot``, ``cli``): forked batch workers,
  the stdio server loop and the ``subunit.run`` drop-in.
"""

__version__ = "0.1.0.dev0"

__all__ = ["__version__"]
