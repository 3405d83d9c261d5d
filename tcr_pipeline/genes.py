"""Gene and MHC names normalised with tidytcells (IMGT nomenclature).

``TRBV20-1``, ``TRBV20-01``, ``TRBV20-1*01`` and ``TCRBV20-01`` are one gene: V/J calls are
reduced to IMGT *gene* precision (the allele is dropped — the shipped data's ``*01`` is
artificial). A name tidytcells does not recognise (``TRBV99*01``) is kept as written and flagged,
so it can never silently match a real gene. MHC names are standardised the same way
(``A*02:01`` → ``HLA-A*02:01``).
"""

from __future__ import annotations

import functools
import logging

_QUIET = {"log_failures": False}


@functools.lru_cache(maxsize=65536)
def normalise_gene(name: str) -> tuple[str, bool]:
    """``(IMGT gene name, recognised)``; an unrecognised name comes back unchanged with ``False``."""
    import tidytcells  # imported here: it loads IMGT tables (≈0.3 s) that only encoding needs

    logging.getLogger("tidytcells").setLevel(logging.ERROR)
    value = name.strip()
    result = tidytcells.tr.standardize(value, precision="gene", enforce_functional=False, **_QUIET)
    return (result, True) if result else (value, False)


@functools.lru_cache(maxsize=4096)
def normalise_mhc(name: str) -> tuple[str, bool]:
    """``(standard MHC name, recognised)``, as :func:`normalise_gene`."""
    import tidytcells

    logging.getLogger("tidytcells").setLevel(logging.ERROR)
    value = name.strip()
    result = tidytcells.mh.standardize(value, **_QUIET)
    return (result, True) if result else (value, False)
