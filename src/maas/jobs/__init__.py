"""Jobs: training, fine-tuning, optimization and evaluation, landing in the registry.

A job is a durable row (``jobs``) with its event log (``job_events``); the
``JobManager`` runs queued jobs in separate processes through a ``JobBackend`` and
hands what they produce to a ``ResultSink`` that the composition root provides
(the ``Publisher``), so this package never imports the services above it.
"""
