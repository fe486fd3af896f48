from finetune_core.train.callbacks import ProgressEvent, TqdmBar
from finetune_core.train.config import TrainConfig, load_config
from finetune_core.train.recipe import TrainResult, train

__all__ = ["ProgressEvent", "TqdmBar", "TrainConfig", "TrainResult", "load_config", "train"]
