"""The UNIT translator as an MLflow pyfunc model: encoded images in, translated PNGs out.

Input: a pandas DataFrame with one column ``image`` of encoded images (PNG, JPEG, ... as
bytes; over HTTP the scoring server base64-decodes binary columns), any size and mode.
Parameters: ``source`` and ``target``, the domains to translate between (by name, e.g.
``husky`` and ``corgi``, or by slot); or, for two-domain models, ``direction``: ``a2b``
(the default when no source and target are given) or ``b2a``. Output: a DataFrame with one
column ``image`` of PNG bytes, each the size of its input (base64 in HTTP answers).

Request to ``mlflow models serve``::

    POST /invocations
    {"dataframe_split": {"columns": ["image"], "data": [["<base64 PNG>"]]}, "params": {"direction": "b2a"}}
    {"dataframe_split": {"columns": ["image"], "data": [["<base64 PNG>"]]}, "params": {"source": "day", "target": "snow"}}

The model is logged "from code" (:mod:`unit_tracking.model_code`): MLflow stores that file,
not a cloudpickle of this class, so loading the model unpickles nothing; the weights are a
generator-only UNIT checkpoint read by :func:`unit_core.checkpoint.load_checkpoint`
(``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from importlib import metadata

import mlflow
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
from PIL import Image, ImageOps

from unit_core.translate import Translator, batches_by_size

IMAGE_COLUMN = "image"
DIRECTION_PARAM = "direction"
SOURCE_PARAM, TARGET_PARAM = "source", "target"
DEFAULT_DIRECTION = "a2b"
CHECKPOINT_ARTIFACT = "checkpoint"
#: device the served model runs on; "auto" picks a GPU when there is one
DEVICE_ENV = "UNIT_SERVE_DEVICE"
# Imported by unit_core / this module at serving time; pinned to the versions installed when logging.
RUNTIME_DISTRIBUTIONS = ("mlflow", "numpy", "pillow", "pandas", "pydantic", "pyyaml")


def _bad_input(message: str) -> MlflowException:
    # INVALID_PARAMETER_VALUE makes the scoring server answer 400 instead of 500.
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def decode_image(value: object, row: int) -> Image.Image:
    """Bytes (or base64 text) of an encoded image -> PIL image, orientation from EXIF applied."""
    if isinstance(value, str):
        try:
            value = base64.b64decode(value, validate=False)
        except binascii.Error as exc:
            raise _bad_input(f"row {row}: column '{IMAGE_COLUMN}' is text but not base64: {exc}") from None
    if not isinstance(value, (bytes, bytearray)):
        raise _bad_input(f"row {row}: column '{IMAGE_COLUMN}' must hold encoded image bytes, got {type(value).__name__}")
    try:
        with Image.open(io.BytesIO(value)) as handle:
            image = ImageOps.exif_transpose(handle)
            image.load()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise _bad_input(f"row {row}: not a readable image: {exc}") from None
    return image


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class UnitTranslatorModel(mlflow.pyfunc.PythonModel):
    """Translates the images of a DataFrame with F_{s->t} of a trained UNIT, between any two of its domains."""

    def load_context(self, context) -> None:
        checkpoint = context.artifacts[CHECKPOINT_ARTIFACT]
        self.translator = Translator.from_checkpoint(checkpoint, device=os.environ.get(DEVICE_ENV, "auto"))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        source, target = self.pair(params or {})
        if IMAGE_COLUMN not in model_input.columns:
            raise _bad_input(f"input needs a column '{IMAGE_COLUMN}' of encoded images, got columns {list(model_input.columns)}")
        images = [(row, decode_image(value, row)) for row, value in enumerate(model_input[IMAGE_COLUMN])]
        outputs: list[bytes] = []
        # Consecutive images of one size are translated as one batch.
        for batch in batches_by_size(images, batch_size=8):
            translated = self.translator.translate_images([image for _, image in batch], source, target)
            outputs += [encode_png(image) for image in translated]
        return pd.DataFrame({IMAGE_COLUMN: outputs})

    def pair(self, params: dict) -> tuple[str, str]:
        """(source, target) slots from the request's parameters; a 400 answer naming the problem otherwise."""
        source, target = params.get(SOURCE_PARAM) or "", params.get(TARGET_PARAM) or ""
        try:
            if source or target:
                if not (source and target):
                    raise ValueError(f"parameters '{SOURCE_PARAM}' and '{TARGET_PARAM}' go together; got only one")
                return self.translator.domain(source), self.translator.domain(target)
            return self.translator.direction(params.get(DIRECTION_PARAM) or DEFAULT_DIRECTION)
        except ValueError as exc:
            raise _bad_input(str(exc)) from None


def model_signature() -> ModelSignature:
    return ModelSignature(
        inputs=Schema([ColSpec(DataType.binary, IMAGE_COLUMN)]),
        outputs=Schema([ColSpec(DataType.binary, IMAGE_COLUMN)]),
        params=ParamSchema([
            ParamSpec(DIRECTION_PARAM, DataType.string, ""),
            ParamSpec(SOURCE_PARAM, DataType.string, ""),
            ParamSpec(TARGET_PARAM, DataType.string, ""),
        ]),
    )


def input_example(domains: list[str]) -> tuple[pd.DataFrame, dict[str, str]]:
    """A 16x16 RGB gradient as PNG, from the first domain to the second; MLflow checks the model on it when logging."""
    ramp = bytes(value for y in range(16) for x in range(16) for value in (16 * x, 16 * y, 128))
    image = Image.frombytes("RGB", (16, 16), ramp)
    return pd.DataFrame({IMAGE_COLUMN: [encode_png(image)]}), {SOURCE_PARAM: domains[0], TARGET_PARAM: domains[1]}


def pip_requirements() -> list[str]:
    """Exact versions of what the model imports; torch by its version alone, whatever build trained it.

    The weights run on any build of the same torch version, so the requirement names no
    build: ``torch==2.13.0``, not the ``2.13.0+cpu`` of a CPU training machine, which only
    PyTorch's CPU wheel index serves and which would give a GPU serving host a CPU build.
    Installed from PyPI it is the CUDA build on Linux and the CPU build on macOS and Windows;
    a host that wants another build installs it first (``--env-manager local`` serves with
    the torch already installed). The version is the same as the training machine's, so the
    pinned versions of the other packages stay consistent with it.
    """
    public_version = torch.__version__.partition("+")[0]
    return [f"torch=={public_version}", *(f"{name}=={metadata.version(name)}" for name in RUNTIME_DISTRIBUTIONS)]
