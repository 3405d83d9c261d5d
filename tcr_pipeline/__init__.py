"""tcr-pipeline: predict TCR–epitope binding, from raw pairs to a promoted model.

The library is pure: data → encoding → splits → models → training → metrics → bundle.
Orchestration (Prefect, Dask, SLURM) lives outside it, in ``flows/``; the dashboard in
``dashboard/``, the command line in ``tcr_cli/``. It imports none of them (``lint-imports``).
"""

__version__ = "0.1.0"
