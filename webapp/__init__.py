"""Tunebook web app: Django project. Never imports torch or finetune_core."""
