"""Text embeddings: what a feature view declares, and the models that compute them."""
