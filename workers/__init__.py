"""Celery workers: the only bridge between the web app's database and finetune_core."""

from workers.celery import app

__all__ = ["app"]
