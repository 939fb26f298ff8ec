"""Services: the cache → store → upstream decision, and the ``source``/``stale`` flags of each answer."""
