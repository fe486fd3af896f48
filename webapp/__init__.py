"""Tunebook web app: Django project. Never imports torch; of the engine, only its torch-free
contracts (finetune_core.contracts; see ARCHITECTURE.md)."""
