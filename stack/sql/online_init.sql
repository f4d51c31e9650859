-- The online store's database: pgvector for embedding views (docker-compose's online-postgres).
CREATE EXTENSION IF NOT EXISTS vector;
