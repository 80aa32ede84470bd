"""A small ONNX graph writer shared by the exporters: named nodes, typed constants, opset-aware reductions."""

from __future__ import annotations

import numpy as np

__all__ = ["ABSENT_LOG_TERM", "Graph", "checked_bytes", "gmmnet_version", "head_constants", "make_model", "rounder",
           "set_metadata"]


#: The head constant of a component with weight 0 (log 0): finite, so that the graph holds no
#: infinities, and so far below any other that exp(L_k − max L) is exactly 0 in float32 and float64.
ABSENT_LOG_TERM = -1e30


def head_constants(consts: np.ndarray) -> np.ndarray:
    """c_k for the head: −inf (a component with weight 0) becomes :data:`ABSENT_LOG_TERM`."""
    consts = np.asarray(consts, dtype=np.float64)
    return np.where(np.isneginf(consts), ABSENT_LOG_TERM, consts)


def rounder(dtype: str):
    """a ↦ a rounded to ``dtype`` and back to float64 (float64: the identity on values)."""
    np_dtype = np.float32 if dtype == "float32" else np.float64
    return lambda a: np.asarray(a, dtype=np.float64).astype(np_dtype).astype(np.float64)


class Graph:
    """Nodes and initializers of one graph, in the order written.

    ``renames`` maps an internal tensor name to the graph output it becomes, so that a builder
    can name tensors by their role (``head/label``) and still write the output ``label``.
    """

    def __init__(self, dtype: str, opset: int):
        import onnx

        self.onnx = onnx
        self.set_dtype(dtype)
        self.opset = opset
        self.nodes: list = []
        self.inits: list = []
        self._init_names: set[str] = set()
        self.renames: dict[str, str] = {}  # internal tensor name → graph output name

    def set_dtype(self, dtype: str) -> None:
        """The element type of the nodes and constants written from here on."""
        self.dtype = dtype
        self.np_dtype = np.float32 if dtype == "float32" else np.float64
        self.elem = self.onnx.TensorProto.FLOAT if dtype == "float32" else self.onnx.TensorProto.DOUBLE

    def const(self, name: str, value, doc: str = "", dtype=None) -> str:
        from onnx import numpy_helper

        if name in self._init_names:
            return name
        arr = np.asarray(value, dtype=dtype or self.np_dtype)
        t = numpy_helper.from_array(arr if arr.ndim == 0 else np.ascontiguousarray(arr), name)
        if doc:
            t.doc_string = doc
        self.inits.append(t)
        self._init_names.add(name)
        return name

    def ints(self, name: str, values) -> str:
        return self.const(name, np.asarray(values, dtype=np.int64), dtype=np.int64)

    def node(self, op: str, inputs: list[str], name: str, doc: str = "", out: str | None = None, **attrs) -> str:
        out = self.renames.get(out or name, out or name)
        n = self.onnx.helper.make_node(op, inputs, [out], name=name, **attrs)
        if doc:
            n.doc_string = doc
        self.nodes.append(n)
        return out

    def reduce(self, op: str, x: str, axes: list[int], name: str, keepdims: int, doc: str = "") -> str:
        """Reduce* with ``axes`` as an attribute (before opset 18) or an input (18+; ReduceSum 13+)."""
        as_input = self.opset >= 18 or op == "ReduceSum"
        if as_input:
            ax = self.ints("axes/" + "_".join(str(a) for a in axes), axes)
            return self.node(op, [x, ax], name, doc, keepdims=keepdims)
        return self.node(op, [x], name, doc, axes=list(axes), keepdims=keepdims)

    def unsqueeze(self, x: str, axes: list[int], name: str, doc: str = "") -> str:
        return self.node("Unsqueeze", [x, self.ints("axes/" + "_".join(str(a) for a in axes), axes)], name, doc)

    def squeeze(self, x: str, axes: list[int], name: str, doc: str = "") -> str:
        return self.node("Squeeze", [x, self.ints("axes/" + "_".join(str(a) for a in axes), axes)], name, doc)

    def reshape(self, x: str, shape: list[int], name: str, doc: str = "") -> str:
        return self.node("Reshape", [x, self.ints("shape/" + "_".join(str(s) for s in shape), shape)], name, doc)


def gmmnet_version() -> str:
    """gmmnet's version, as ``gmmnet.__version__`` gives it (read here, so that formats do not import the package)."""
    from importlib import metadata

    try:
        return metadata.version("gmmnet")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0"


def make_model(graph, opset: int, doc: str):
    """An ``onnx.ModelProto`` around ``graph``: gmmnet as producer, the smallest ir_version for ``opset``."""
    import onnx

    opset_ids = [onnx.helper.make_opsetid("", opset)]
    model = onnx.helper.make_model(graph, opset_imports=opset_ids, producer_name="gmmnet",
                                  producer_version=gmmnet_version())
    model.ir_version = onnx.helper.find_min_ir_version_for(opset_ids)
    model.model_version = 1
    model.doc_string = doc
    return model


def checked_bytes(model) -> bytes:
    """The model's protobuf, checked by ``onnx.checker.check_model(full_check=True)``: serialized
    once, for the check and for whoever writes the model (:func:`gmmnet.io.save_onnx` takes it)."""
    import onnx

    data = model.SerializeToString()
    onnx.checker.check_model(data, full_check=True)
    return data


def set_metadata(model, meta: dict[str, str]) -> None:
    """Append ``meta`` to the model's metadata_props, in order."""
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
