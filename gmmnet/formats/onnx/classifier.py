"""GaussianMixtureClassifier → ONNX classifier with ``label`` and ``probabilities`` outputs.

The graph is gmmnet's mixture network (:func:`gmmnet.formats.onnx.export.to_onnx`) over all
classes' components (:meth:`gmmnet.pipeline.GaussianMixtureClassifier.to_mixture`, weights
prior_c · π_{c,k}), asked for its ``responsibilities`` only, plus a class head:

* ``probabilities = responsibilities @ M`` with M the (K, n_classes) 0/1 matrix of the component
  → class map.  By Bayes' rule the components' posteriors summed per class are p(c | x), which is
  what ``predict_proba`` computes (there, through per-class log-sum-exp).
* ``label = Gather(classes, ArgMax(probabilities))``: the estimator's ``classes_`` themselves,
  int64 for integer classes, a string tensor for string classes (float and bool classes keep
  their types as double / bool).

See docs/api.md, "ONNX classifier".
"""

from __future__ import annotations

import json

import numpy as np

from ...errors import NotFittedError, UnsupportedModelError, UsageError
from .export import to_onnx

__all__ = ["CLASSIFIER_OUTPUTS", "classifier_to_onnx"]

CLASSIFIER_OUTPUTS = ("label", "probabilities")
_INTERNAL = "head/component_responsibilities"


def _label_tensor(classes: np.ndarray):
    """(ONNX element type, numpy array, type name) holding ``classes_`` exactly."""
    import onnx

    kind = classes.dtype.kind
    if kind in "iu":
        if kind == "u" and classes.size and int(classes.max()) > np.iinfo(np.int64).max:
            raise UnsupportedModelError("class labels above the int64 range cannot be an ONNX int64 label")
        return onnx.TensorProto.INT64, classes.astype(np.int64), "int64"
    if kind == "b":
        return onnx.TensorProto.BOOL, classes.astype(bool), "bool"
    if kind == "f":
        return onnx.TensorProto.DOUBLE, classes.astype(np.float64), "float64"
    if kind in "US" or (kind == "O" and all(isinstance(c, str) for c in classes)):
        return onnx.TensorProto.STRING, np.array([str(c) for c in classes], dtype=object), "string"
    types = sorted({type(c).__name__ for c in classes})
    raise UnsupportedModelError(
        f"class labels of type {', '.join(types)} have no ONNX tensor type; use integer or string labels"
    )


def classifier_to_onnx(clf, *, activation: str = "abs", dtype: str = "float32", opset: int = 17,
                       centering: str = "auto", **options):
    """Export a fitted :class:`gmmnet.pipeline.GaussianMixtureClassifier` as an ONNX classifier.

    Parameters
    ----------
    clf : gmmnet.pipeline.GaussianMixtureClassifier
        Fitted.
    activation, dtype, opset, centering, **options
        Passed to :func:`gmmnet.formats.onnx.to_onnx` (the neuron layer and mixture head are its
        graph; ``outputs`` is fixed).

    Returns
    -------
    onnx.ModelProto
        Input ``X`` [batch, d] of ``dtype``; outputs ``label`` [batch] (the type of ``classes_``:
        int64 for integers, string for strings) and ``probabilities`` [batch, n_classes] of
        the mixture graph's responsibilities type (``dtype`` unless an option widens the head),
        columns in the order of ``classes_``.  Metadata ``classes`` (JSON list),
        ``label_type`` and ``n_classes`` are added to the mixture export's.

    Raises
    ------
    gmmnet.errors.NotFittedError
        ``clf`` is not fitted.
    gmmnet.errors.UsageError
        ``clf`` is not a GaussianMixtureClassifier.
    gmmnet.errors.UnsupportedModelError
        Class labels of mixed or non-tensor types.
    """
    import onnx
    from onnx import helper, numpy_helper

    from ...pipeline import GaussianMixtureClassifier

    if not isinstance(clf, GaussianMixtureClassifier):
        raise UsageError(f"classifier_to_onnx expects a GaussianMixtureClassifier, got {type(clf).__name__}")
    if "outputs" in options:
        raise UsageError("classifier_to_onnx fixes the outputs to label and probabilities")
    if not hasattr(clf, "mixtures_"):
        raise NotFittedError("the GaussianMixtureClassifier is not fitted; call fit first")
    classes = np.asarray(clf.classes_)
    label_elem, label_values, label_type = _label_tensor(classes)
    mixture = clf.to_mixture()
    n_classes, K = len(classes), mixture.n_components
    model = to_onnx(mixture, activation=activation, dtype=dtype, opset=opset, outputs=("responsibilities",),
                    centering=centering, **options)
    graph = model.graph

    # the mixture's responsibilities become an internal tensor of the class head
    for node in graph.node:
        node.output[:] = [_INTERNAL if o == "responsibilities" else o for o in node.output]
        node.input[:] = [_INTERNAL if i == "responsibilities" else i for i in node.input]
    float_elem = graph.output[0].type.tensor_type.elem_type
    del graph.output[:]

    np_float = onnx.helper.tensor_dtype_to_np_dtype(float_elem)
    onehot = np.zeros((K, n_classes), dtype=np_float)
    onehot[np.arange(K), clf.class_of_component_] = 1.0
    m_init = numpy_helper.from_array(onehot, "head/class_of_component")
    m_init.doc_string = "row j = one-hot class of mixture component j"
    c_init = numpy_helper.from_array(label_values, "head/classes")
    c_init.doc_string = "the estimator's classes_, in column order of probabilities"
    graph.initializer.extend([m_init, c_init])
    graph.node.extend([
        helper.make_node("MatMul", [_INTERNAL, "head/class_of_component"], ["probabilities"],
                         name="head/probabilities",
                         doc_string="p(c | x) = sum of the responsibilities of class c's components"),
        helper.make_node("ArgMax", ["probabilities"], ["head/class_index"], name="head/class_index", axis=1,
                         keepdims=0, doc_string="index of the most probable class (first on ties)"),
        helper.make_node("Gather", ["head/classes", "head/class_index"], ["label"], name="head/label", axis=0,
                         doc_string="classes_[index]"),
    ])
    lab = helper.make_tensor_value_info("label", label_elem, ["batch"])
    lab.doc_string = f"predicted class ({label_type}, a value of classes_)"
    prob = helper.make_tensor_value_info("probabilities", float_elem, ["batch", n_classes])
    prob.doc_string = "class probabilities p(c | x), columns in the order of classes_"
    graph.output.extend([lab, prob])
    graph.name = "gmmnet_classifier"

    model.doc_string = (
        f"GaussianMixtureClassifier over {n_classes} classes ({K} components in all). "
        + model.doc_string
        + " Class head: probabilities = responsibilities summed per class (MatMul with the one-hot component "
        "-> class matrix); label = classes_[argmax]."
    )
    meta = {e.key: e.value for e in model.metadata_props}
    meta.update({
        "outputs": ",".join(CLASSIFIER_OUTPUTS),
        "model_kind": "classifier",
        "classes": json.dumps([c.item() if hasattr(c, "item") else c for c in label_values.tolist()]),
        "label_type": label_type,
        "n_classes": str(n_classes),
        "class_of_component": ",".join(str(int(i)) for i in clf.class_of_component_),
    })
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model, full_check=True)
    return model
