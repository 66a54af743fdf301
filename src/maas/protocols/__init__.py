"""Wire formats as pure data: V2 tensors, OpenAI schemas, management schemas.

May import: ``maas.config``, ``maas.errors`` (and pydantic, numpy, orjson). Never a web
framework, SQL or an ML framework.
"""
