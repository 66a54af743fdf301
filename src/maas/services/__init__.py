"""Composition root: builds every long-lived object of a server and closes them.

Only this package and ``maas.api.app`` wire objects together. May import every layer
below the API (registry, runtimes, serving, auth, jobs).
"""

from maas.services.root import Services, open_collector, open_services

__all__ = ["Services", "open_collector", "open_services"]
