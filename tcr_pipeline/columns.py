"""The columns of a TCR–epitope pair table, in one pandas-free place (the query log names them too)."""

from __future__ import annotations

SEQUENCE_COLUMNS = ("CDR3_alpha", "CDR3_beta", "Epitope")
GENE_COLUMNS = ("V_alpha", "V_beta", "J_alpha", "J_beta")
#: what a model reads, in the order the dashboard and the query log show it
FEATURE_COLUMNS = (*SEQUENCE_COLUMNS[:2], *GENE_COLUMNS, "Epitope", "MHC")
#: every column of the input CSV, in the shipped file's order
COLUMNS = (*SEQUENCE_COLUMNS[:2], *GENE_COLUMNS, "Epitope", "clone_id", "MHC", "Label")
TCR_COLUMNS = ("CDR3_alpha", "CDR3_beta", *GENE_COLUMNS)

__all__ = ["COLUMNS", "FEATURE_COLUMNS", "GENE_COLUMNS", "SEQUENCE_COLUMNS", "TCR_COLUMNS"]
