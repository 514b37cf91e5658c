"""The MLflow pyfunc model of a labnet network, logged as code so loading it unpickles nothing.

``mlflow.pyfunc.load_model(uri).predict(array)`` returns class probabilities, shape (n, classes), for
inputs of shape (n, *input_shape) or (n, features). An input of another size, or outside the value
range the network was trained on (raw 0-255 pixels for a network trained on pixels scaled to 0-1), is
refused with a message naming what is expected (``mlflow models serve`` answers it with that message).
"""

import json

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.models import set_model
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
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
        self.contract = {"shape": list(self.model.input_shape), "dtype": str(self.model.dtype)}
        if "input" in context.artifacts:
            with open(context.artifacts["input"]) as f:
                self.contract.update(json.load(f))

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        x = np.asarray(getattr(model_input, "to_numpy", lambda: model_input)(), dtype=self.model.dtype)
        return self.loss.probabilities(self.model.predict(self.checked(x)))

    def checked(self, x: np.ndarray) -> np.ndarray:
        """``x`` as a batch of the network's input shape, or an error that says what is expected."""
        shape = tuple(self.contract["shape"])
        size = int(np.prod(shape))
        expected = f"expected inputs of shape (n, {', '.join(map(str, shape))})"
        if size > 1 and len(shape) > 1:
            expected += f" or (n, {size})"
        expected += f", {self.contract['dtype']}"
        if self.contract.get("preprocessing"):
            expected += f": {self.contract['preprocessing']}"
        if x.ndim == 0 or x[0].size != size or (x.ndim > 2 and x.shape[1:] != shape):
            raise MlflowException(f"{expected}; got shape {x.shape}", error_code=INVALID_PARAMETER_VALUE)
        x = x.reshape(len(x), *shape)
        if self.contract.get("range") and x.size:
            low, high = self.contract["range"]
            if not (x.min() >= low and x.max() <= high):  # (NaN fails too)
                raise MlflowException(
                    f"{expected}; got values from {x.min():g} to {x.max():g}", error_code=INVALID_PARAMETER_VALUE
                )
        return x


set_model(LabnetClassifier())
