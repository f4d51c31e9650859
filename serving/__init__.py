"""Serving features to model services: the Feast feature server over the project's repository."""
