"""Who may call what, and how much: API keys, roles, per-model access, rate limits,
quotas, usage records and the audit log.

May import: ``maas.registry`` (for ACL targets and the shared tables), ``maas.config``,
``maas.errors``, ``maas.protocols``, ``maas.observability``.
"""
