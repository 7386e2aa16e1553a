"""Celery workers: `celery -A workers worker` (add `-B` for the sweeper in small setups)."""

from workers.celery import app

__all__ = ["app"]
