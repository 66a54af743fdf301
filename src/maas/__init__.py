"""maas: a self-hosted Model-as-a-Service platform.

Importing ``maas`` pulls in nothing heavy; the server, the registry and the SDK are
imported from their own packages.
"""

__version__ = "0.1.0"
