"""msgpack-RPC between peers: a pure framer, a multiplexed asyncio transport, tensors.

The wire is the public msgpack-RPC spec (``[0, msgid, method, params]``,
``[1, msgid, error, result]``, ``[2, method, params]``) as a plain stream of msgpack arrays, so a
third-party msgpack-RPC client can call ``ping`` and ``info`` on a server without a secret.
Errors travel in the error slot as ``{"code": str, "message": str}``. With a cluster secret a
connection authenticates (HMAC challenge-response) and then every frame both ways carries a
tag with a sequence number (``peer.rpc.auth``); before that only ``ping`` and the handshake
answer. TLS is optional (``tls=``: an ``ssl.SSLContext`` or ``TlsFiles``).

    server = RpcServer(handlers={"run_share": run_share}, secret=secret, info=lambda: {...},
                       tls=TlsFiles(certfile="peer.crt", keyfile="peer.key"))
    await server.start("0.0.0.0", 7001)
    pool = RpcPool(secret=secret, on_transfer=bandwidth.observe, tls=TlsFiles(cafile="peer.crt"))
    result = await pool.call(("10.0.0.2", 7001), "run_share", share, timeout=30.0)

Connections are closed after ``Limits.auth_timeout`` without a handshake and after
``Limits.idle_timeout`` idle; ``Limits.max_connections_per_source`` caps one address. The
server's ``stats`` count every drop by cause (``peer.rpc.server.DROP_KEYS``).

``RemoteError`` (the peer answered with an error), ``RpcTimeout`` and ``ConnectionLost`` are
the peer's faults; ``EncodeError`` and ``TensorError`` are ours. A peer process that moves
MiB-sized frames should call ``peer.rpc.tuning.retain_heap()`` once at start-up (see there).
"""

from typing import TYPE_CHECKING, Any

# The asyncio transport (client, pool, server) is loaded on first use, so that the pure
# parts (errors, framer, limits, tensors) import without it: the peer's core uses tensors.
_LAZY = {
    "CallInfo": "peer.rpc.client",
    "RpcClient": "peer.rpc.client",
    "RpcPool": "peer.rpc.pool",
    "RpcServer": "peer.rpc.server",
    "TlsFiles": "peer.rpc.tls",
}

from peer.rpc.errors import (  # noqa: E402
    CODES,
    AuthError,
    ConnectionLost,
    EncodeError,
    FrameError,
    FrameTooLarge,
    MessageError,
    RemoteError,
    RpcError,
    RpcTimeout,
    TensorError,
    VersionMismatch,
)
from peer.rpc.framer import PROTOCOL_VERSION  # noqa: E402
from peer.rpc.limits import Limits  # noqa: E402
from peer.rpc.tensors import pack_tensor, unpack_tensor  # noqa: E402

if TYPE_CHECKING:
    from peer.rpc.client import CallInfo, RpcClient
    from peer.rpc.pool import RpcPool
    from peer.rpc.server import RpcServer
    from peer.rpc.tls import TlsFiles


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'peer.rpc' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "CODES",
    "PROTOCOL_VERSION",
    "AuthError",
    "CallInfo",
    "ConnectionLost",
    "EncodeError",
    "FrameError",
    "FrameTooLarge",
    "Limits",
    "MessageError",
    "RemoteError",
    "RpcClient",
    "RpcError",
    "RpcPool",
    "RpcServer",
    "RpcTimeout",
    "TensorError",
    "TlsFiles",
    "VersionMismatch",
    "pack_tensor",
    "unpack_tensor",
]
