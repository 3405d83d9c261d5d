"""Prefect flows: the orchestration shell around the pure ``tcr_pipeline`` library.

``prepare``       raw CSV → encoded tensors + encoder
``search``        asynchronous hyperopt TPE trials on a Dask cluster, then registration/promotion
``tcr-pipeline``  prepare → search → promote (flows/pipeline.py)
``monitor``       recent queries vs the current model's training data: drift report + alerts
``retrain``       prepare → search → promote on a new DVC-tracked data version
"""
