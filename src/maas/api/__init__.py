"""The ASGI app and its routers: parse, authorise, call a service, encode.

Thin by rule: a router never touches SQL, a runtime or the environment. May import
every layer below it.
"""
