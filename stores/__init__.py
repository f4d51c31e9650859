"""The stores: one folder per online store (sqlite/, postgres/, redis/) and the offline history (history/).

Shared by every online store: ``sink.py`` (the sink contract and its rows), ``feast_layout.py`` (the
flush skeleton over Feast's table layout), ``ordering.py`` (what may overwrite what), ``keys.py`` and
``values.py`` (Feast's serialisation), ``documents.py`` (vector search results), ``reembed.py``
(re-embedding after a model change) over ``vector_store.py`` (what a store keeping vectors supplies),
``registry.py`` (which store a feature_store.yaml names) and ``repository.py`` (opening the Feast
repository).
"""
