"""The Airflow integration: notifiers (alerts), operator links, the executor and the Celery
config, and what the Model health plugin renders (the lake read in health.py, the page in page.py,
the words both share in words.py). `plugins/model_health.py` is only the entry point Airflow finds."""
