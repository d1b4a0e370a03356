"""The embeddings pipeline: a Cloud Run Job backfilling document vectors into PostgreSQL/pgvector."""
