"""testserver: a persistent, interactive test server speaking subunit v2 (with the 2.1 extension).

The package is layered; imports flow one way, from the wire up:

- ``testserver.wire``: the sans-I/O protocol core: command framing (``commands``,
  ``framing``), the subunit 2.1 codec (``packets``, with its decoder in ``decoding`` and the
  shared layout in ``packetformat``), control events (``control``) and the core types
  (``events``, ``errors``, ``sentinels``). Bytes in, events out; events in, bytes out.
- the test layer (``loading``, ``results``, ``capture``, ``execution``, ``subtests``,
  ``interactive``): discover tests once, run a batch, turn outcomes into subunit events.
- reloading (``watching``, ``modulegraph``, ``statetracking``, ``staleness``,
  ``reloading``): notice source changes and bring the loaded suite up to date between
  batches, or decide that only a restart is safe.
- the process layer (``channel``, ``worker``, ``batch``, ``server``, ``oneshot``, ``cli``):
  the private stdio channel, forked batch workers, the serve loop and the ``subunit.run``
  drop-in.
- the clients (``client``, ``runmodel``, ``tracebacks``, ``console``, ``jsonout``, ``watch``,
  ``watchkeys``, ``debugging``, ``bridge``, ``bridgemessages``, ``pool``, ``daemon``,
  ``shim``): the Python client library, the run model the commands share, tracebacks read
  as text, ``testserver run/list/watch/debug`` (watch's terminal keys), the editor bridge
  (and its JSON messages), and the warm daemon (with its pool of servers) behind
  ``testserver-client`` for testr and stestr.
"""

__version__ = "0.1.0.dev0"

__all__ = ["__version__"]
