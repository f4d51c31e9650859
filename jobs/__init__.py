"""Scheduled jobs: backfill from Postgres, materialisation, re-streaming; each under a lock."""
