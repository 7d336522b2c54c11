"""Experiment tracking and model registry of the UNIT pipeline (MLflow).

Every MLflow call of the project goes through :mod:`unit_tracking.mlflow_store`; the
served model (an MLflow pyfunc that translates images) is :mod:`unit_tracking.pyfunc_model`.
``unit_core`` stays free of MLflow.
"""


class TrackingError(RuntimeError):
    """The tracking server or registry cannot do what was asked; the message names the URI or model.

    Defined here, not beside the MLflow calls, so that catching it does not import MLflow.
    """
