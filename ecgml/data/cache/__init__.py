"""The signal cache: building it (:mod:`.cache`), loading record slices into rows (:mod:`.rows`, the bulk
fast path :mod:`.bulk`), and the caches in a folder (:mod:`.store`)."""
