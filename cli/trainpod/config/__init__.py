"""Configuration: the schema of training.toml, loading with overlays, preset resolution."""

from trainpod.config.loader import Catalog, load_catalog
from trainpod.config.schema import TrainingConfig

__all__ = ["Catalog", "TrainingConfig", "load_catalog"]
