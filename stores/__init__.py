"""The stores: one folder per online store (sqlite/, postgres/, redis/, milvus/: each declares itself in its
``__init__``, stores/registry.py finds them) and the offline history (history/).

Shared by every online store: ``sink.py`` (the sink contract and its rows), ``feast_layout.py`` (the
flush skeleton over Feast's table layout, the fence check, the wrong-model refusal), ``ordering.py`` (what
may overwrite what), ``keys.py`` and ``values.py`` (Feast's serialisation), ``documents.py`` (vector search
results and exact distances), ``reembed.py`` (re-embedding after a model change) over ``vector_store.py``
(what a store keeping vectors supplies), ``contributions.py`` (aggregation views' contributions in a SQL
store), ``registry.py`` (the store declarations and which store a feature_store.yaml names), ``local.py``
(what a store's local server offers the stack, tests and benches), ``views.py`` (feature views from the
registry's cache) and ``repository.py`` (opening, copying and applying the Feast repository).
"""
