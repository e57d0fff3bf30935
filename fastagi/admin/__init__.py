"""Every change an administrator makes, one function each: the CLI calls them (and so
will the web console), never the store directly.

Each function validates the request (bad input is a :class:`~fastagi.store.StoreError`
with a message for the administrator, and nothing is written), makes the change, and
records it in the history as a ``config_changed`` event naming who made it (``by``), so
an audit shows who changed what, and in that event's transaction sends ``NOTIFY
fastagi_config``, so every running server reloads its directory at once
(fastagi/store/changes.py). Queries (lists, lookups) are the stores' own.
"""
