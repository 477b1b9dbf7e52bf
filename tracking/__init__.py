"""MLflow tracking: the runs of fleets and models (``runs``), the process that writes them beside the computing
(``recorder``), which params and metrics a run gets (``run_record``), the store (``mlflow_store``), what is uploaded
(``mlflow_artifacts``) and the ``review`` of past runs. It takes plain data (paths, dicts, ``ModelOutcome``) and
never imports Prefect; the flows call it.
"""
