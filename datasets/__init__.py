"""IEA datasets: the IEA40K loader and the synthetic IEA generator."""

from pieanet.datasets.iea40k import DatasetError, IEA40KDataset

__all__ = ["DatasetError", "IEA40KDataset"]
