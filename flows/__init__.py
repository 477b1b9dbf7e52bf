"""Orchestration: Prefect flows composing the tasks, and the MLflow record of every run (flows/tracking.py)."""
