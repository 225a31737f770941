"""Every shape the service speaks, declared once.

`batch` holds the data plane's own in/out types (numpy arrays); the other modules are the pydantic
models of the wire formats (own API, records, TF Serving, Open Inference Protocol v2, errors, ops). The
answers are built from these models and /openapi.json is generated from their JSON schemas
(service/openapi.py).
"""
