"""How this machine runs a local service: Debian packages (``system.py``) and a Postgres cluster of its own
(``postgres.py``, placed by ``pg_location.py``). The stack's services (stack/) and each store's local server
(stores/<name>/server.py) build on them; they import only core.
"""
