"""The Celery workers' configuration: Airflow's own, plus the task supervisor's exit fix.

Point `[celery] celery_config_options` here (`AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=
airflow_integration.celery_config.CELERY_CONFIG`; docker-compose.yaml and scripts/celery_stack.py do).
A Celery worker imports this module when it builds its app, before its pool forks, so every
task it supervises gets `airflow_integration.executor.patch_supervisor_exit_wait`: without it, a task
whose sockets close just before it exits holds its worker slot for `[workers]
min_heartbeat_interval` (5 s) more, and a skipped task reports its end that much later. The
configuration itself is Airflow's default, unchanged.
"""

from __future__ import annotations

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

from airflow_integration.executor import patch_supervisor_exit_wait

EXIT_FIX_APPLIED = patch_supervisor_exit_wait()
CELERY_CONFIG = DEFAULT_CELERY_CONFIG
