"""The Open Inference Protocol v2 over gRPC, served from every gunicorn worker (see server.py)."""
