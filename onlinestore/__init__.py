"""Old ``type:`` names of the online stores, kept working for feature_store.yaml files written before
the stores moved to ``stores/<name>/``. Nothing here but re-exports; new files use the stores/ names."""
