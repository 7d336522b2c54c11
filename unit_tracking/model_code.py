"""MLflow "model from code" entry point of the UNIT translator (see unit_tracking.pyfunc_model).

MLflow stores this file with the model and runs it when loading: it names the model
object, so no pickled object is stored or loaded.
"""

import mlflow

from unit_tracking.pyfunc_model import UnitTranslatorModel

mlflow.models.set_model(UnitTranslatorModel())
