"""The MLflow pyfunc model of a labnet network, logged as code so loading it unpickles nothing.

``mlflow.pyfunc.load_model(uri).predict(array)`` returns class probabilities,
shape (n, classes), for inputs of shape (n, *input_shape) or (n, features).
"""

import json

import numpy as np
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class LabnetClassifier(PythonModel):
    def load_context(self, context) -> None:
        from labnet.build import model_from_spec
        from labnet.plugins import get_registry
        from labnet.train.checkpoint import load_npz

        with open(context.artifacts["spec"]) as f:
            spec = json.load(f)
        registry = get_registry()
        self.model = model_from_spec(spec, registry, load_npz(context.artifacts["weights"]))
        self.loss = registry.get("loss", spec["loss"])()

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        x = np.asarray(getattr(model_input, "to_numpy", lambda: model_input)(), dtype=self.model.dtype)
        x = x.reshape(len(x), *self.model.input_shape)
        return self.loss.probabilities(self.model.predict(x))


set_model(LabnetClassifier())
