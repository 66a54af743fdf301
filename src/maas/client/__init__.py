"""The Python SDK: ``Client`` and ``AsyncClient`` over httpx.

Imports only ``maas.protocols`` and ``maas.errors``: installing and importing the SDK
pulls in no server code. Errors come back as the same ``maas.errors`` classes the
server raised, so ``except maas.errors.ModelNotFound`` works against a remote server.
"""

from maas.client.aio import AsyncClient
from maas.client.sync import Client

__all__ = ["AsyncClient", "Client"]
