"""The asyncio shells of one peer: the node that wires gossip, RPC, executor and HTTP; the origin
that carries a plan out and re-plans; the executor thread; the HTTP API and its metrics."""
