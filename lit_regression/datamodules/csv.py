"""``CSVDataModule``: the table datamodule's first name, kept so that existing configs and checkpoints load."""

from __future__ import annotations

from lit_regression.datamodules.table import TableDataModule


class CSVDataModule(TableDataModule):
    """The same as :class:`TableDataModule` (CSV, TSV and Parquet, categories, gaps); the name of existing
    configs and checkpoints. New configs should say ``TableDataModule``."""
