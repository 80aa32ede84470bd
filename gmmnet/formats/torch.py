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
    except Exception:  # any module may fail on a foreign probe; that only means "not an Abs"
        return False
    return isinstance(out, torch.Tensor) and out.shape == probe.shape and bool(torch.equal(out, probe.abs()))


def _array(t, torch):
    import numpy as np

    return np.asarray(t.detach().to("cpu", torch.float64).numpy(), dtype=np.float64).copy()


def _batchnorm(mod, name: str, torch):
    """(scale, shift) of an nn.BatchNorm1d as eval() computes it: y = scale · z + shift, per feature."""
    import numpy as np

    from ..errors import UnsupportedModelError

    if mod.running_mean is None or mod.running_var is None:
        raise UnsupportedModelError(f"BatchNorm1d '{name}' keeps no running statistics (track_running_stats=False): "
                                    "it normalizes by each batch, so it is not one affine map")
    scale = 1.0 / np.sqrt(_array(mod.running_var, torch) + float(mod.eps))
    shift = -_array(mod.running_mean, torch) * scale
    if mod.affine:
        gamma, beta = _array(mod.weight, torch), _array(mod.bias, torch)
        scale, shift = gamma * scale, gamma * shift + beta
    note = f"BatchNorm1d '{name}' folded into the Linear before it (w' = γ/√(var+ε)·w, b' = γ(b − mean)/√(var+ε) + β)"
    if mod.training:
        note += "; the module is in training mode: its running statistics were folded, i.e. the network as eval() computes it"
    return scale, shift, note


class TorchLayers:
    """What :func:`read_torch` found: ``layers`` [(W, b, activation | None)], ``folded`` and ``notes``."""

    def __init__(self, layers, folded, notes):
        self.layers, self.folded, self.notes = layers, folded, notes


class _Affine:
    """x ↦ A x + c over the input (level None) or over the activations of a layer (level index).

    The input itself is A = None: the identity, of a width not known until a Linear or a
    per-feature constant says it, times the scalar ``s0`` plus ``t0`` (e.g. ``x / 255``).
    """

    def __init__(self, A, c, level, folded=(), s0=1.0, t0=0.0):
        self.A, self.c, self.level, self.folded = A, c, level, list(folded)
        self.s0, self.t0 = s0, t0

    def _dense(self, n):
        import numpy as np

        return np.eye(n) * self.s0, np.full(n, self.t0)

    def then(self, A2, c2, folded=None):
        A, c = (self.A, self.c) if self.A is not None else self._dense(A2.shape[1])
        return _Affine(A2 @ A, A2 @ c + c2, self.level, self.folded + ([folded] if folded else []))

    def scaled(self, s, t, folded=None):
        import numpy as np

        s, t = np.asarray(s, float), np.asarray(t, float)
        more = self.folded + ([folded] if folded else [])
        if self.A is None and s.ndim == 0 and t.ndim == 0:
            return _Affine(None, None, self.level, more, float(s) * self.s0, float(s) * self.t0 + float(t))
        if self.A is None:
            n = s.size if s.ndim else t.size
            A, c = self._dense(n)
        else:
            A, c = self.A, self.c
        s = np.broadcast_to(s, c.shape)
        return _Affine(s[:, None] * A, s * c + t, self.level, more)

    def plus(self, other, sign):
        if self.A is None or other.A is None or self.level != other.level:
            return None
        return _Affine(self.A + sign * other.A, self.c + sign * other.c, self.level, self.folded + other.folded)


class _Layer:
    """One neuron level: rows added by every activation over the same input, until something reads it."""

    def __init__(self, level_in):
        self.level_in, self.A, self.c, self.acts, self.folded, self.sealed = level_in, [], [], [], [], False

    def add(self, z, act):
        start = self.n
        self.A.append(z.A)
        self.c.append(z.c)
        self.acts += [act] * z.A.shape[0]
        self.folded += [f for f in z.folded if f not in self.folded]
        return start, self.n

    @property
    def n(self) -> int:
        return sum(a.shape[0] for a in self.A)

    def arrays(self):
        import numpy as np

        act = self.acts[0] if len(set(self.acts)) == 1 else list(self.acts)
        return np.concatenate(self.A), np.concatenate(self.c), act


class _Other:
    """A value gmmnet does not read (what follows the layers): remembered by the ops that made it."""

    def __init__(self, ops):
        self.ops = list(ops)


def _first_linear_hint(module, torch) -> str:
    for name, mod in module.named_modules():
        if isinstance(mod, torch.nn.Linear):
            parent = name.rpartition(".")[0]
            where = f" (inside '{parent}')" if parent else ""
            return (f"the first Linear is '{name}'{where}: pass the submodule that holds it and its Abs/ReLU "
                    f"(an nn.Sequential), or its arrays: gmmnet.recover.from_layers(model.{name}.weight.detach().numpy(), "
                    f"model.{name}.bias.detach().numpy(), activation='abs' or 'relu')")
    return "it holds no nn.Linear"


def read_torch(module) -> TorchLayers:
    """The Linear → Abs/ReLU layers of a torch module, read from its traced graph (torch.fx).

    Reads ``nn.Sequential`` stacks and custom modules alike (a forward that torch.fx can trace:
    no data-dependent control flow), e.g. ``Linear → abs → square → sum → sqrt``.  Affine steps
    between the input (or a layer) and the next activation fold into one Linear, exactly: more
    ``nn.Linear``s, ``nn.BatchNorm1d`` (its running statistics, as ``eval()`` computes it),
    ``F.linear``, adding, subtracting, multiplying or dividing by constants, negation, and
    ``Identity``/``Dropout``/``Flatten``.  Activations: ``nn.ReLU``/``F.relu``/``torch.relu``, and
    ``torch.abs``/``Tensor.abs``/``abs()`` or any parameter-free module that returns ``|x|`` on a
    probe.  Whatever follows the last layer (a readout, a sum of squares, a square root) is
    listed in ``notes``.  A module that cannot be traced is refused with a message that names the
    submodule to pass instead.
    """
    import operator

    import numpy as np

    from ..errors import UnsupportedModelError

    torch = _torch()
    nn = torch.nn
    F = torch.nn.functional
    import torch.fx as fx

    if isinstance(module, nn.Linear):
        module = nn.Sequential(module)
    # Abs-like modules stay whole (call_module nodes), recognized by a probe run before tracing:
    # running a module while fx traces would be traced too
    abs_like = {id(m) for m in module.modules() if m is not module and _is_abs_module(m, torch)}

    class _Tracer(fx.Tracer):
        def is_leaf_module(self, m, qualname):
            return id(m) in abs_like or super().is_leaf_module(m, qualname)

    try:
        graph = _Tracer().trace(module)
    except Exception as exc:  # fx raises TraceError, TypeError, NotImplementedError... on untraceable code
        raise UnsupportedModelError(
            f"cannot trace {type(module).__name__} with torch.fx ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
            + _first_linear_hint(module, torch)) from None
    mods = dict(module.named_modules())
    abs_fns = {torch.abs, operator.abs, abs, torch.Tensor.abs}
    relu_fns = {torch.relu, F.relu, torch.Tensor.relu}
    passthrough = {nn.Identity, nn.Dropout, nn.Flatten}
    layers: list[tuple] = []
    vals: dict = {}
    inputs = 0

    def const(a):
        """A constant argument as float64 numpy (None if the argument is not a constant)."""
        if isinstance(a, (int, float)) and not isinstance(a, bool):
            return np.asarray(float(a))
        if isinstance(a, fx.Node) and isinstance(vals.get(a), np.ndarray):
            return vals[a]
        if isinstance(a, torch.Tensor):
            return _array(a, torch)
        return None

    def other(node, *args):
        ops = [op for a in args if isinstance(vals.get(a), (_Other,)) for op in vals[a].ops]
        name = getattr(node.target, "__name__", str(node.target))
        if node.op == "call_module":
            name = type(mods[node.target]).__name__
        return _Other(ops + [name])

    def activate(node, z, act):
        if not isinstance(z, _Affine) or z.A is None:  # |x| of the raw input has no Linear to read
            return other(node, node.args[0])
        last = layers[-1] if layers else None
        if last is not None and not last.sealed and z.level == last.level_in:
            start, stop = last.add(z, act)  # more neurons of the same level, e.g. relu(z) and relu(−z)
            return ("chunk", len(layers) - 1, start, stop)
        if z.level != (len(layers) - 1 if layers else None):
            raise UnsupportedModelError(f"node '{node.name}' does not read the layer before it (a branch or a residual "
                                        "connection): gmmnet reads a plain Linear → Abs/ReLU stack")
        layers.append(_Layer(z.level))
        start, stop = layers[-1].add(z, act)
        return ("chunk", len(layers) - 1, start, stop)

    for node in graph.nodes:
        args = node.args
        if node.op == "placeholder":
            inputs += 1
            if inputs > 1:
                raise UnsupportedModelError(f"{type(module).__name__}.forward takes several inputs; gmmnet reads one")
            vals[node] = _Affine(None, None, None)  # the input: the identity map
            continue
        if node.op == "get_attr":
            t = module
            for part in str(node.target).split("."):
                t = getattr(t, part)
            vals[node] = _array(t, torch) if isinstance(t, torch.Tensor) else _Other([str(node.target)])
            continue
        if node.op == "output":
            out = args[0]
            break
        z = _as_affine(vals.get(args[0]), layers, np) if args and isinstance(args[0], fx.Node) else None
        if node.op == "call_module":
            mod = mods[node.target]
            if isinstance(mod, nn.Linear):
                b = _array(mod.bias, torch) if mod.bias is not None else np.zeros(mod.out_features)
                vals[node] = z.then(_array(mod.weight, torch), b) if z is not None else other(node, args[0])
            elif isinstance(mod, nn.BatchNorm1d):
                if z is None:
                    vals[node] = other(node, args[0])
                else:
                    scale, shift, note = _batchnorm(mod, node.target, torch)
                    vals[node] = z.scaled(scale, shift, note)
            elif isinstance(mod, tuple(passthrough)):
                vals[node] = z if z is not None else vals.get(args[0])
            elif isinstance(mod, nn.ReLU):
                vals[node] = activate(node, z, "relu")
            elif id(mod) in abs_like:
                vals[node] = activate(node, z, "abs")
            else:
                vals[node] = other(node, args[0])
            continue
        target = node.target
        if node.op == "call_method":
            target = {"abs": torch.Tensor.abs, "relu": torch.Tensor.relu, "neg": operator.neg}.get(target, target)
        if target in abs_fns:
            vals[node] = activate(node, z, "abs")
        elif target in relu_fns:
            vals[node] = activate(node, z, "relu")
        elif target is F.linear and z is not None:
            w = const(args[1] if len(args) > 1 else node.kwargs.get("weight"))
            bias = const(args[2] if len(args) > 2 else node.kwargs.get("bias"))
            vals[node] = z.then(w, np.zeros(w.shape[0]) if bias is None else bias) if w is not None else other(node, args[0])
        elif target in (torch.cat, torch.concat, torch.hstack) and not (set(node.kwargs) - {"dim"}):
            dim = node.kwargs.get("dim", args[1] if len(args) > 1 else (1 if target is torch.hstack else 0))
            parts = [_as_affine(vals.get(a), layers, np) if isinstance(a, fx.Node) else None for a in args[0]]
            if dim in (1, -1) and all(isinstance(q, _Affine) and q.A is not None and q.level == parts[0].level
                                      for q in parts):
                vals[node] = _Affine(np.concatenate([q.A for q in parts]), np.concatenate([q.c for q in parts]),
                                     parts[0].level, [f for q in parts for f in q.folded])
            else:
                vals[node] = other(node, *[a for a in args[0] if isinstance(a, fx.Node)])
        elif target in (operator.neg, torch.neg) and z is not None:
            vals[node] = z.scaled(-1.0, 0.0)
        elif target in (operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.sub, torch.mul,
                        torch.div) and len(args) == 2 and not node.kwargs:  # (alpha=, rounding_mode= are not read)
            vals[node] = _binary(node, target, args, vals, layers, const, other, operator, torch, np)
        else:
            vals[node] = other(node, *[a for a in args if isinstance(a, fx.Node)])
    else:  # pragma: no cover - fx graphs always end in an output node
        out = None
    tail = vals.get(out) if isinstance(out, fx.Node) else None
    if not layers:
        what = f" (after its affine part it computes {' → '.join(tail.ops)})" if isinstance(tail, _Other) else ""
        raise UnsupportedModelError(f"no Linear followed by Abs or ReLU found in {type(module).__name__}{what}")
    result = [layer.arrays() for layer in layers]
    folded = [f for layer in layers for f in layer.folded]
    notes: list[str] = []
    tail_affine = _as_affine(tail, layers, np)
    if isinstance(tail, _Affine) and tail.level == len(layers) - 1 and tail.A is not None:
        result.append((tail.A, tail.c, None))
    elif isinstance(tail_affine, _Affine) and tail_affine.level == len(layers) - 1:
        pass  # the module returns the last layer's activations themselves
    elif isinstance(tail, _Other):
        notes.append("after the last layer the module computes " + " → ".join(tail.ops) + " (not read)")
    return TorchLayers(result, folded, notes)


def _as_affine(v, layers, np):
    """A value as an affine map, else None.

    Activations are a selection of their level's neurons; reading them seals the level, so that
    no later activation can add neurons to it.
    """
    if isinstance(v, tuple) and v[0] == "chunk":
        _, level, start, stop = v
        layers[level].sealed = True
        n = layers[level].n
        return _Affine(np.eye(n)[start:stop], np.zeros(stop - start), level)
    return v if isinstance(v, _Affine) else None


def _binary(node, target, args, vals, layers, const, other, operator, torch, np):
    """z ± constant, z · constant, z / constant (per feature or scalar) stay affine; anything else is not read."""
    a, b = args
    za = _as_affine(vals.get(a), layers, np) if hasattr(a, "op") else None
    zb = _as_affine(vals.get(b), layers, np) if hasattr(b, "op") else None
    ca, cb = (const(a) if za is None else None), (const(b) if zb is None else None)
    add = target in (operator.add, torch.add)
    sub = target in (operator.sub, torch.sub)
    if isinstance(za, _Affine) and cb is not None and cb.ndim <= 1:
        if add or sub:
            return za.scaled(1.0, cb if add else -cb)
        if target in (operator.mul, torch.mul):
            return za.scaled(cb, 0.0)
        if np.all(cb != 0):
            return za.scaled(1.0 / cb, 0.0)
    if isinstance(zb, _Affine) and ca is not None and ca.ndim <= 1:
        if add:
            return zb.scaled(1.0, ca)
        if sub:
            return zb.scaled(-1.0, ca)
        if target in (operator.mul, torch.mul):
            return zb.scaled(ca, 0.0)
    if isinstance(za, _Affine) and isinstance(zb, _Affine) and (add or sub):
        both = za.plus(zb, 1.0 if add else -1.0)
        if both is not None:
            return both
    return other(node, *[x for x in args if hasattr(x, "op")])


def layers_from_torch(module):
    """(W, b, activation) of each Linear → Abs/ReLU stage of a torch module (see :func:`read_torch`).

    A trailing Linear without activation is returned with activation ``None`` (a readout).
    Arrays are float64 numpy; W has shape (out_features, in_features).
    """
    return read_torch(module).layers


def from_torch(module, **kw):
    """Recover a mixture from the first Linear → Abs/ReLU layer of a torch module.

    ``module`` is an ``nn.Sequential`` or any module torch.fx can trace (:func:`read_torch`);
    BatchNorm1d and other affine steps before the activation are folded into the Linear, and
    the report lists them in ``report["folded"]``.  Keywords go to
    :func:`gmmnet.recover.from_layers` (``groups``, ``data``, ``head``, ``n_components``).
    Returns ``(mixture, report)``.
    """
    from ..recover import from_layers

    torch = _torch()
    read = read_torch(module)
    layers = read.layers
    W, b, act = layers[0]
    param = next(module.parameters())
    kw.setdefault("dtype", "float64" if param.dtype == torch.float64 else "float32")
    mixture, report = from_layers(W, b, activation=act, **kw)
    report["folded"] = list(read.folded)
    report.setdefault("notes", []).extend(read.folded)
    extra = [f"layer {i}: {l[0].shape[0]} × {l[0].shape[1]} {l[2] or 'linear'}" for i, l in enumerate(layers[1:], 1)]
    if extra:
        report["notes"].append("only the first layer was recovered; also found " + "; ".join(extra))
    report["notes"].extend(read.notes)
    return mixture, report


# ---------------------------------------------------------------------------
# IR → torch modules (to_torch and friends) go below this line.
