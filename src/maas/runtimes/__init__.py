"""One adapter per framework behind one small interface (``Runtime``).

May import: ``maas.config``, ``maas.errors``, ``maas.protocols``, numpy and, each in
its own module only, the framework it adapts. Never HTTP, SQL or serving: a runtime
loads an artifact, describes its signature and runs a batch.
"""
