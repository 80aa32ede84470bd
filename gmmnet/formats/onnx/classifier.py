"""GaussianMixtureClassifier → ONNX classifier with ``label`` and ``probabilities`` outputs.

The graph is gmmnet's mixture network (:mod:`gmmnet.formats.onnx.export`) over all
classes' components (:meth:`gmmnet.pipeline.GaussianMixtureClassifier.to_mixture`, weights
prior_c · π_{c,k}), asked for its ``responsibilities`` only, plus a class head:

* ``probabilities = responsibilities @ M`` with M the (K, n_classes) 0/1 matrix of the component
  → class map.  By Bayes' rule the components' posteriors summed per class are p(c | x), which is
  what ``predict_proba`` computes (there, through per-class log-sum-exp).
* ``label = Gather(classes, ArgMax(probabilities))``: the estimator's ``classes_`` themselves,
  int64 for integer classes, a string tensor for string classes (float and bool classes keep
  their types as double / bool).

The classifier is reached by duck typing (formats do not import the estimators): anything with
``to_mixture()``, ``classes_`` and ``class_of_component_`` is one.  The mixture it gives may carry an
input transform (a classifier behind scalers or PCA), which the mixture network folds in.

See docs/api.md, "ONNX classifier".
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

from ...errors import NotFittedError, UnsupportedModelError, UsageError
from . import export as _mixture
from .options import DEFAULT_OUTPUTS, ExportOptions
from .plan import ExportPlan, Exporter, register_exporter

__all__ = ["CLASSIFIER_OUTPUTS", "build", "classifier_to_onnx", "is_classifier", "plan"]

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


def is_classifier(model) -> bool:
    """True for a GaussianMixtureClassifier (duck typing: ``to_mixture``, ``classes_``/``class_of_component_`` once fitted)."""
    return callable(getattr(model, "to_mixture", None)) and hasattr(type(model), "predict_proba")


def _declines(clf, options: ExportOptions) -> str | None:
    if options.outputs != DEFAULT_OUTPUTS:
        return "classifier_to_onnx fixes the outputs to label and probabilities"
    if options.needs_deep:
        return "a classifier is written as one mixture network: no shifted_relu, intensity or level outputs"
    return None


def plan(clf, options: ExportOptions) -> ExportPlan:
    """The mixture network's plan for all classes' components (outputs: their responsibilities)."""
    if not hasattr(clf, "classes_") or not hasattr(clf, "class_of_component_"):
        raise NotFittedError("the GaussianMixtureClassifier is not fitted; call fit first")
    classes = np.asarray(clf.classes_)
    _label_tensor(classes)  # refuse labels without an ONNX type before any work
    inner = _mixture.plan(clf.to_mixture(), options.replace(outputs=("responsibilities",), output_names="gmmnet"))
    return replace(inner, exporter="classifier", options=options, kind="classifier", outputs=CLASSIFIER_OUTPUTS,
                   state={**inner.state, "inner": inner, "classes": classes,
                          "class_of_component": np.asarray(clf.class_of_component_)})


def build(plan: ExportPlan):
    """The mixture network of ``plan`` with the class head on its responsibilities; checked."""
    import onnx
    from onnx import helper, numpy_helper

    classes, class_of_component = plan.state["classes"], plan.state["class_of_component"]
    label_elem, label_values, label_type = _label_tensor(classes)
    model = _mixture.build(plan.state["inner"])
    graph = model.graph
    n_classes, K = len(classes), plan.levels[0][0]

    # the mixture's responsibilities become an internal tensor of the class head
    for node in graph.node:
        node.output[:] = [_INTERNAL if o == "responsibilities" else o for o in node.output]
        node.input[:] = [_INTERNAL if i == "responsibilities" else i for i in node.input]
    float_elem = graph.output[0].type.tensor_type.elem_type
    del graph.output[:]

    np_float = onnx.helper.tensor_dtype_to_np_dtype(float_elem)
    onehot = np.zeros((K, n_classes), dtype=np_float)
    onehot[np.arange(K), class_of_component] = 1.0
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
        "class_of_component": ",".join(str(int(i)) for i in class_of_component),
    })
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model, full_check=True)
    return model


EXPORTER = register_exporter(Exporter(
    name="classifier", takes=is_classifier, declines=_declines, plan=plan, build=build,
    models="a fitted gmmnet GaussianMixtureClassifier", order=0,
))


def classifier_to_onnx(clf, *, activation: str = "abs", dtype: str = "float32", opset: int = 17,
                       centering: str = "auto", **options):
    """Export a fitted :class:`gmmnet.pipeline.GaussianMixtureClassifier` as an ONNX classifier.

    Parameters
    ----------
    clf : gmmnet.pipeline.GaussianMixtureClassifier
        Fitted (or any object with its ``to_mixture()``, ``classes_`` and ``class_of_component_``).
    activation, dtype, opset, centering, **options
        :class:`~gmmnet.formats.onnx.options.ExportOptions` of the mixture network (its neuron
        layer and head); ``outputs`` is fixed.  :func:`gmmnet.formats.onnx.to_onnx` takes a
        classifier too.

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
        ``clf`` is not a GaussianMixtureClassifier, or an option the classifier graph does not take.
    gmmnet.errors.UnsupportedModelError
        Class labels of mixed or non-tensor types.
    """
    import warnings

    from ...errors import PrecisionWarning

    if not is_classifier(clf):
        raise UsageError(f"classifier_to_onnx expects a GaussianMixtureClassifier, got {type(clf).__name__}")
    if "outputs" in options:
        raise UsageError("classifier_to_onnx fixes the outputs to label and probabilities")
    opts = ExportOptions(activation=activation, dtype=dtype, opset=opset, centering=centering, **options)
    reason = _declines(clf, opts)
    if reason is not None:
        raise UsageError(reason)
    pl = plan(clf, opts)
    for message in pl.warnings:
        warnings.warn(message, PrecisionWarning, stacklevel=2)
    return build(pl)
