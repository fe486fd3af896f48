"""Tunebook's fine-tuning engine: models, datasets, QLoRA training, generation.

It never imports Django; the web app reaches it only through the workers.
"""

__version__ = "0.1.0"
