"""resq worker: the Celery tasks, the model loop and the providers."""
