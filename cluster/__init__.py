"""Ray cluster and job definitions: local start-up, runtime environments, job entrypoints and schedules."""
