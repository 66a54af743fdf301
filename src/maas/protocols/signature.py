"""The signature of a model version: its named, typed input and output tensors.

Detected at push time by the runtime, stored with the version, served as V2 model
metadata and used to check requests before they reach the model.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Signature", "TensorSpec"]

V2_DATATYPES = (
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
)


class TensorSpec(BaseModel):
    """One named tensor; ``-1`` in ``shape`` marks a dimension of any size."""

    model_config = ConfigDict(frozen=True)

    name: str
    datatype: str = Field(description="A KServe V2 datatype, e.g. FP32 or BYTES.")
    shape: list[int]


class Signature(BaseModel):
    model_config = ConfigDict(frozen=True)

    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []

    def input(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.inputs if spec.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.outputs if spec.name == name), None)
