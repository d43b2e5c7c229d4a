"""Replace every sigmoid of an encoder (or of the whole model) by a hard-sigmoid.

hσ(x) = relu6(x + 3) / 6 (CLNet eq. 13) has no exponential: on a mobile CPU it is an add, a
clamp and a multiply, it exports to ONNX as Add / Clip / Div (no Sigmoid node), and its
output range is exactly [0, 1] with no tail, which suits INT8. The substitution changes the
function the model computes, so `hard_sigmoid_study` measures the NMSE before and after, and
after a short fine-tune.

Usage (what `csideploy export --hard-sigmoid encoder --finetune-epochs N` runs):

    report = replace_sigmoid(model, scope="encoder")   # model is left untouched
    if report.nothing_to_replace:
        print(report.message)                          # e.g. CRNet: no sigmoid in the encoder
    new_model = report.model                           # a deep copy with hσ in place of σ

    study = hard_sigmoid_study(model, eval_x, train_x=train_x, finetune_epochs=2)
    study.nmse_before_db, study.nmse_after_db, study.nmse_finetuned_db, study.model

Both `nn.Sigmoid` modules and functional calls (`torch.sigmoid`, `F.sigmoid`, `x.sigmoid()`,
`torch.special.expit`, in-place `sigmoid_`) are replaced. Modules are swapped in place in the
copy; functional calls are found by tracing with `torch.fx`, and only the smallest submodule
that makes such a call is turned into a rewritten `GraphModule` (state-dict keys unchanged).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.overrides import TorchFunctionMode

from csideploy.errors import CsiDeployError
from csideploy.models.blocks import HardSigmoid

Scope = Literal["encoder", "all"]
SCOPES: tuple[str, ...] = ("encoder", "all")

_SIGMOID_FUNCTIONS: dict[Any, str] = {
    torch.sigmoid: "torch.sigmoid",
    torch.special.expit: "torch.special.expit",
    F.sigmoid: "torch.nn.functional.sigmoid",
    torch.Tensor.sigmoid: "Tensor.sigmoid",
}
_SIGMOID_INPLACE_FUNCTIONS: dict[Any, str] = {
    torch.sigmoid_: "torch.sigmoid_",
    torch.Tensor.sigmoid_: "Tensor.sigmoid_",
}
_SIGMOID_METHODS = frozenset({"sigmoid"})
_SIGMOID_INPLACE_METHODS = frozenset({"sigmoid_"})


@dataclass(frozen=True)
class Replacement:
    """One sigmoid that was (or would be) replaced.

    `path` is the module path from the model root (`encoder.sa.sigmoid`) for a module, or the
    path of the submodule making the call for a functional call; `kind` is "module",
    "function" or "method"; `target` names what was called; `node` is the fx node name.
    """

    path: str
    kind: str
    target: str
    node: str = ""

    def __str__(self) -> str:
        where = f"{self.path} ({self.target}" + (f", node {self.node})" if self.node else ")")
        return where


@dataclass(frozen=True)
class SubstitutionReport:
    """What `replace_sigmoid` did: the new model and every replacement, by path."""

    model: nn.Module
    scope: str
    replaced: tuple[Replacement, ...]
    rewritten_graphs: tuple[str, ...] = ()
    """Submodules that became fx GraphModules because they called sigmoid functionally."""
    model_name: str = ""
    checked_by_forward: tuple[str, ...] = ()
    """Halves fx could not trace: a forward pass showed they make no functional sigmoid call."""

    @property
    def nothing_to_replace(self) -> bool:
        return not self.replaced

    @property
    def message(self) -> str:
        where = "encoder" if self.scope == "encoder" else "encoder or decoder"
        name = self.model_name or type(self.model).__name__
        if self.nothing_to_replace:
            return f"{name}: no sigmoid in the {where}; nothing to replace"
        return f"{name}: replaced {len(self.replaced)} sigmoid(s) in the {where} by hard-sigmoid"

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "scope": self.scope,
            "nothing_to_replace": self.nothing_to_replace,
            "replaced": [str(r) for r in self.replaced],
            "rewritten_graphs": list(self.rewritten_graphs),
            "checked_by_forward": list(self.checked_by_forward),
            "message": self.message,
        }


def check_scope(scope: str) -> str:
    """Validate a substitution scope: 'encoder' (UE side only) or 'all'."""
    if scope not in SCOPES:
        choices = ", ".join(SCOPES)
        raise CsiDeployError(f"hard-sigmoid scope must be one of {choices}; got {scope!r}")
    return scope


def _parts(model: nn.Module, scope: str) -> tuple[str, ...]:
    parts = ("encoder",) if check_scope(scope) == "encoder" else ("encoder", "decoder")
    for part in parts:
        if not isinstance(getattr(model, part, None), nn.Module):
            raise CsiDeployError(
                f"{type(model).__name__} has no `{part}` submodule; hard-sigmoid substitution "
                "works on a two-sided model (csideploy.models.build)"
            )
    return parts


def _join(*names: str) -> str:
    return ".".join(n for n in names if n)


class _TraceFailure(Exception):
    """torch.fx could not trace a module (data-dependent control flow and the like)."""


def _trace(module: nn.Module, path: str) -> fx.GraphModule:
    """Symbolic trace in eval mode (training-only branches, such as noise, are not traced)."""
    was_training = module.training
    module.eval()
    try:
        return fx.symbolic_trace(module)
    except Exception as exc:  # fx raises many types on data-dependent control flow
        raise _TraceFailure(
            f"cannot trace {path or 'the model'} ({type(module).__name__}) with torch.fx: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    finally:
        module.train(was_training)


class _SigmoidSpy(TorchFunctionMode):
    """Records every functional sigmoid call made during a forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        try:
            name = _SIGMOID_FUNCTIONS.get(func) or _SIGMOID_INPLACE_FUNCTIONS.get(func)
        except TypeError:  # an unhashable callable is no sigmoid
            name = None
        if name:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def _spy_sigmoid_calls(module: nn.Module, example: torch.Tensor) -> list[str]:
    was_training = module.training
    module.eval()
    spy = _SigmoidSpy()
    try:
        with torch.no_grad(), spy:
            module(example)
    finally:
        module.train(was_training)
    return spy.calls


def _sigmoid_call(node: fx.Node) -> tuple[str, str, bool] | None:
    """(kind, target name, in-place) when `node` calls a sigmoid, else None."""
    if node.op == "call_function":
        if node.target in _SIGMOID_FUNCTIONS:
            return "function", _SIGMOID_FUNCTIONS[node.target], False
        if node.target in _SIGMOID_INPLACE_FUNCTIONS:
            return "function", _SIGMOID_INPLACE_FUNCTIONS[node.target], True
    elif node.op == "call_method":
        if node.target in _SIGMOID_METHODS:
            return "method", f"Tensor.{node.target}", False
        if node.target in _SIGMOID_INPLACE_METHODS:
            return "method", f"Tensor.{node.target}", True
    return None


def _owner(node: fx.Node) -> str:
    """Path (relative to the traced root) of the innermost module whose forward made the call."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path, _ = list(stack.values())[-1]
    return path if isinstance(path, str) else ""


def _sigmoid_modules(root: nn.Module, prefix: str) -> list[Replacement]:
    return [
        Replacement(_join(prefix, name), "module", "torch.nn.Sigmoid")
        for name, module in root.named_modules()
        if isinstance(module, nn.Sigmoid)
    ]


def _functional_sigmoids(
    root: nn.Module, prefix: str, example: torch.Tensor | None = None
) -> tuple[list[Replacement], bool]:
    """Functional sigmoid calls found by fx, and whether fx could trace `root`.

    When fx cannot trace `root` and an `example` input is given, a forward pass on it checks
    that no functional sigmoid is called (modules are found without tracing); one that is
    called cannot be rewritten, which is an error.
    """
    try:
        graph = _trace(root, prefix).graph
    except _TraceFailure as failure:
        if example is None:
            raise CsiDeployError(str(failure)) from failure
        calls = _spy_sigmoid_calls(root, example)
        if calls:
            raise CsiDeployError(
                f"{failure}; a forward pass shows it calls {', '.join(sorted(set(calls)))}, "
                "which can only be rewritten in a traceable module (or use nn.Sigmoid modules)"
            ) from failure
        return [], False
    found = []
    for node in graph.nodes:
        call = _sigmoid_call(node)
        if call is not None:
            found.append(Replacement(_join(prefix, _owner(node)), call[0], call[1], node.name))
    return found, True


def find_sigmoids(
    module: nn.Module, prefix: str = "", *, example: torch.Tensor | None = None
) -> list[Replacement]:
    """Every sigmoid in `module`: `nn.Sigmoid` submodules and functional calls (fx scan).

    For a module fx cannot trace, give an `example` input: a forward pass then checks for
    functional calls instead (an error when there are any, since they have no path).
    """
    return _sigmoid_modules(module, prefix) + _functional_sigmoids(module, prefix, example)[0]


def _swap_sigmoid_modules(root: nn.Module, prefix: str) -> list[Replacement]:
    found = _sigmoid_modules(root, prefix)
    for name, module in list(root.named_modules()):
        if isinstance(module, nn.Sigmoid):
            root.set_submodule(name, HardSigmoid())
    return found


def _rewrite_graph(module: nn.Module, path: str) -> fx.GraphModule:
    """`module` traced, with each sigmoid node replaced by a hard-sigmoid."""
    gm = _trace(module, path)
    count = 0
    for node in list(gm.graph.nodes):
        call = _sigmoid_call(node)
        if call is None:
            continue
        with gm.graph.inserting_before(node):
            if call[2]:  # in-place: keep the mutation semantics
                new = gm.graph.call_function(F.hardsigmoid, (node.args[0],), {"inplace": True})
            else:
                name = f"hard_sigmoid_{count}"
                while hasattr(gm, name):
                    count += 1
                    name = f"hard_sigmoid_{count}"
                gm.add_submodule(name, HardSigmoid())
                new = gm.graph.call_module(name, (node.args[0],))
            count += 1
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.recompile()
    return gm


def _rewrite_functional(
    root: nn.Module, prefix: str, example: torch.Tensor | None
) -> tuple[nn.Module, list[Replacement], list[str], bool]:
    """Rewrite the smallest submodules of `root` that call sigmoid; returns the new root."""
    found, traced = _functional_sigmoids(root, prefix, example)
    if not found:
        return root, [], [], traced
    owners = sorted({r.path for r in found}, key=lambda p: p.count("."))
    outermost: list[str] = []
    for owner in owners:
        if not any(owner == o or owner.startswith(o + ".") for o in outermost):
            outermost.append(owner)
    rewritten = []
    for owner in outermost:
        relative = owner[len(prefix) :].lstrip(".") if prefix else owner
        target = root.get_submodule(relative) if relative else root
        new = _rewrite_graph(target, owner)
        if relative:
            root.set_submodule(relative, new)
        else:
            root = new
        rewritten.append(owner)
    return root, found, rewritten, traced


def _examples(model: nn.Module) -> dict[str, torch.Tensor]:
    """A batch-1 input for the encoder (from the zoo's input spec) and for the decoder."""
    from csideploy.models.registry import CSI_SHAPE, get_entry

    try:
        shape = get_entry(str(getattr(model, "model_name", ""))).input_spec.shape
    except CsiDeployError:
        shape = CSI_SHAPE
    generator = torch.Generator().manual_seed(0)
    x = 0.5 + 0.1 * torch.randn(1, *shape, generator=generator)
    encoder = model.encoder
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            codeword = encoder(x)
    except Exception:  # an encoder with another input contract: no forward-pass fallback
        return {}
    finally:
        encoder.train(was_training)
    return {"encoder": x, "decoder": codeword}


def replace_sigmoid(model: nn.Module, *, scope: Scope | str = "encoder") -> SubstitutionReport:
    """A copy of `model` with every sigmoid of its encoder (scope="encoder") or of both halves
    (scope="all") replaced by relu6(x + 3) / 6; `model` itself is not modified.

    The report lists each replacement by path; `nothing_to_replace` is True (with a message
    saying so) when the scope holds no sigmoid, e.g. the CRNet encoder. Functional calls are
    found by fx tracing (in eval mode); a half that fx cannot trace is checked by a forward
    pass instead and listed in `checked_by_forward`.
    """
    parts = _parts(model, scope)
    new_model = copy.deepcopy(model)
    examples = _examples(new_model)
    replaced: list[Replacement] = []
    rewritten: list[str] = []
    untraced: list[str] = []
    for part in parts:
        sub = getattr(new_model, part)
        if isinstance(sub, nn.Sigmoid):
            setattr(new_model, part, HardSigmoid())
            replaced.append(Replacement(part, "module", "torch.nn.Sigmoid"))
            continue
        replaced += _swap_sigmoid_modules(sub, part)
        new_sub, calls, graphs, traced = _rewrite_functional(sub, part, examples.get(part))
        if new_sub is not sub:
            setattr(new_model, part, new_sub)
        replaced += calls
        rewritten += graphs
        if not traced:
            untraced.append(part)
    left = [
        r
        for part in parts
        for r in find_sigmoids(getattr(new_model, part), part, example=examples.get(part))
    ]
    if left:
        raise CsiDeployError("sigmoid left after substitution: " + ", ".join(str(r) for r in left))
    return SubstitutionReport(
        model=new_model,
        scope=scope,
        replaced=tuple(replaced),
        rewritten_graphs=tuple(rewritten),
        model_name=str(getattr(model, "model_name", type(model).__name__)),
        checked_by_forward=tuple(untraced),
    )
