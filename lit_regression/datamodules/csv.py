"""``CSVDataModule``: another name of ``TableDataModule``, which configs and checkpoints that name it load with."""

from __future__ import annotations

from lit_regression.datamodules.table import TableDataModule


class CSVDataModule(TableDataModule):
    """The same as :class:`TableDataModule` (CSV, TSV and Parquet, categories, gaps); the name of existing
    configs and checkpoints. New configs should say ``TableDataModule``."""
