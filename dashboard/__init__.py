"""The tcr-pipeline dashboard: a multi-page Dash app over a result store.

``dashboard.app.create_app(store)`` builds it, ``dashboard.app.run(store, host, port)`` serves it
(``tcr-pipeline dashboard``). It reads the store only through :mod:`tcr_pipeline.store`, inside
callbacks, never at import.
"""
