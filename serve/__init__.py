"""`attnsift serve`: a rerank and search HTTP server over Pipeline (FastAPI + uvicorn)."""
