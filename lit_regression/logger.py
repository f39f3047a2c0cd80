"""TensorBoard logger whose version folders are claimed atomically, so concurrent runs never share one."""

from __future__ import annotations

import os

from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only


class RunLogger(TensorBoardLogger):
    """``TensorBoardLogger`` that creates ``version_N`` with ``os.mkdir`` (atomic) on the first process, so two
    runs started at once into the same folder get different versions and neither overwrites the other."""

    def _get_next_version(self) -> int:
        version = super()._get_next_version()
        if rank_zero_only.rank != 0:
            return version
        root = self.root_dir
        os.makedirs(root, exist_ok=True)
        while True:
            try:
                os.mkdir(os.path.join(root, f"version_{version}"))
                return version
            except FileExistsError:
                version += 1
