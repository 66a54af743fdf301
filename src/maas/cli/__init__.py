"""The ``maas`` command: ``serve`` runs the server; every other command is a client.

Remote commands go through ``maas.client``; only ``maas serve`` imports the server.
"""
