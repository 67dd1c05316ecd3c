"""Async OCI distribution client (httpx + anyio)."""
