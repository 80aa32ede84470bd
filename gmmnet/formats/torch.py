"""torch modules ⇄ IR.

torch is imported lazily inside the functions: ``import gmmnet`` works without it.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------
# torch → layers → mixture (recovery; self-contained)


def _torch():
    try:
        import torch
    except ImportError:  # pragma: no cover - depends on the environment
        from ..errors import UnsupportedModelError

        raise UnsupportedModelError("reading torch modules needs torch: pip install 'gmmnet[torch]'") from None
    return torch


def _is_abs_module(mod, torch) -> bool:
    """A parameter-free module whose forward is |x| (checked numerically on a probe)."""
    if any(True for _ in mod.parameters()):
        return False
    probe = torch.tensor([[-2.0, -0.5, 0.0, 0.75, 3.0]])
    try:
        with torch.no_grad():
            out = mod(probe)
    except Exception:
        return False
    return isinstance(out, torch.Tensor) and out.shape == probe.shape and bool(torch.equal(out, probe.abs()))


def layers_from_torch(module):
    """(W, b, activation) of each Linear → Abs/ReLU stage of an ``nn.Sequential``.

    Accepts ``nn.Linear`` followed by ``nn.ReLU`` or by any parameter-free module that
    computes ``|x|`` (e.g. ``class Abs(nn.Module): forward = torch.abs`` — checked on a
    probe), optionally with ``nn.Identity``/``nn.Dropout``/``nn.Flatten`` in between.
    A trailing Linear without activation is returned with activation ``None`` (a readout).
    Arrays are float64 numpy; W has shape (out_features, in_features).
    """
    import numpy as np

    from ..errors import UnsupportedModelError

    torch = _torch()
    nn = torch.nn
    if isinstance(module, nn.Linear):
        mods = [module]
    elif isinstance(module, nn.Sequential):
        mods = list(module)
    else:
        raise UnsupportedModelError(f"expected an nn.Sequential of Linear and Abs/ReLU, got {type(module).__name__}")
    layers: list[tuple] = []
    pending = None
    for i, mod in enumerate(mods):
        if isinstance(mod, (nn.Identity, nn.Dropout, nn.Flatten)):
            continue
        if isinstance(mod, nn.Linear):
            if pending is not None:
                layers.append((*pending, None))
            W = mod.weight.detach().to("cpu", torch.float64).numpy().copy()
            b = (mod.bias.detach().to("cpu", torch.float64).numpy().copy() if mod.bias is not None
                 else np.zeros(W.shape[0]))
            pending = (W, b)
            continue
        act = "relu" if isinstance(mod, nn.ReLU) else ("abs" if _is_abs_module(mod, torch) else None)
        if act is None:
            raise UnsupportedModelError(f"module {i} ({type(mod).__name__}) is neither Linear, ReLU nor an Abs")
        if pending is None:
            raise UnsupportedModelError(f"module {i} ({type(mod).__name__}) has no Linear before it")
        layers.append((*pending, act))
        pending = None
    if pending is not None:
        layers.append((*pending, None))
    if not layers or layers[0][2] is None:
        raise UnsupportedModelError("no Linear followed by Abs or ReLU found")
    return layers


def from_torch(module, **kw):
    """Recover a mixture from the first Linear → Abs/ReLU layer of a torch module.

    Keywords go to :func:`gmmnet.recover.from_layers` (``groups``, ``data``, ``head``,
    ``n_components``).  Returns ``(mixture, report)``.
    """
    from ..recover import from_layers

    torch = _torch()
    layers = layers_from_torch(module)
    W, b, act = layers[0]
    param = next(module.parameters())
    kw.setdefault("dtype", "float64" if param.dtype == torch.float64 else "float32")
    mixture, report = from_layers(W, b, activation=act, **kw)
    extra = [f"layer {i}: {l[0].shape[0]} × {l[0].shape[1]} {l[2] or 'linear'}" for i, l in enumerate(layers[1:], 1)]
    if extra:
        report.setdefault("notes", []).append("only the first layer was recovered; also found " + "; ".join(extra))
    return mixture, report


# ---------------------------------------------------------------------------
# IR → torch modules (to_torch and friends) go below this line.
