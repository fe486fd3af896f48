"""Trans-LoRA: move a LoRA adapter to a new base model without the training data.

train_discriminator(DiscriminatorConfig(run="runs/sports"))   # while data exists
transfer(TransferConfig(run="runs/sports", target="gemma-3-270m", output_dir="runs/to-gemma"))
"""

from finetune_core.contracts.layout import is_transferable
from finetune_core.transfer.discriminator import Discriminator, load_discriminator
from finetune_core.transfer.hooks import Hooks, TransferStopped
from finetune_core.transfer.pipeline import ABLATIONS, TransferConfig, transfer
from finetune_core.transfer.report import format_table
from finetune_core.transfer.sampling import SamplingResult, synthesize
from finetune_core.transfer.seeds import cut_at_item, list_prompt, load_seeds, select_seeds
from finetune_core.transfer.source import DiscriminatorConfig, train_discriminator

__all__ = [
    "ABLATIONS",
    "Discriminator",
    "DiscriminatorConfig",
    "Hooks",
    "SamplingResult",
    "TransferConfig",
    "TransferStopped",
    "cut_at_item",
    "format_table",
    "is_transferable",
    "list_prompt",
    "load_discriminator",
    "load_seeds",
    "select_seeds",
    "synthesize",
    "train_discriminator",
    "transfer",
]
