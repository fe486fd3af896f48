from finetune_core.train.callbacks import ProgressEvent, TqdmCallback
from finetune_core.train.config import TrainConfig, load_config
from finetune_core.train.recipe import TrainResult, train

__all__ = ["ProgressEvent", "TqdmCallback", "TrainConfig", "TrainResult", "load_config", "train"]
