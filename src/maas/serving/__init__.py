"""Deployments: loading, unloading, running model calls off the event loop.

Owns concurrency (routers create no tasks or queues). May import: ``maas.runtimes``,
``maas.registry``, ``maas.protocols``, ``maas.observability``, ``maas.config``,
``maas.errors``.
"""
