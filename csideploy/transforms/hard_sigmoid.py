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
import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.overrides import TorchFunctionMode

from csideploy.errors import CsiDeployError, ShapeError
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


# --- the study: NMSE before / after / fine-tuned ----------------------------------------------


@dataclass(frozen=True)
class HardSigmoidResult:
    """NMSE of the model with sigmoid, with hard-sigmoid, and after fine-tuning (dB)."""

    model_name: str
    scope: str
    replaced: tuple[str, ...]
    convention: str
    n_eval: int
    nmse_before_db: float
    nmse_after_db: float
    nmse_finetuned_db: float | None = None
    finetune_epochs: int = 0
    finetune_samples: int = 0
    finetune_seconds: float | None = None
    model: nn.Module | None = field(default=None, compare=False, repr=False)
    """The substituted model, fine-tuned when `finetune_epochs` > 0 (eval mode)."""

    @property
    def nothing_to_replace(self) -> bool:
        return not self.replaced

    @property
    def degradation_db(self) -> float:
        """NMSE change caused by the substitution alone (positive = worse)."""
        return self.nmse_after_db - self.nmse_before_db

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "scope": self.scope,
            "replaced": list(self.replaced),
            "nothing_to_replace": self.nothing_to_replace,
            "convention": self.convention,
            "n_eval": self.n_eval,
            "nmse_before_db": self.nmse_before_db,
            "nmse_after_db": self.nmse_after_db,
            "nmse_finetuned_db": self.nmse_finetuned_db,
            "finetune_epochs": self.finetune_epochs,
            "finetune_samples": self.finetune_samples,
            "finetune_seconds": self.finetune_seconds,
        }


def model_nmse_db(
    model: nn.Module,
    x: torch.Tensor | np.ndarray,
    *,
    convention: str = "linear",
    batch_size: int = 500,
) -> float:
    """End-to-end NMSE (dB) of `model` on `x` (N, 2, 32, 32), in eval mode, batched."""
    from csideploy.metrics import nmse

    x = _as_csi(x, "eval_x")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x_hat = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)
    value = float(nmse(x.cpu().numpy(), x_hat.cpu().numpy(), convention=convention))
    if math.isnan(value):
        raise CsiDeployError("NMSE is NaN: the evaluation data holds NaN or an all-zero sample")
    return value


def _as_csi(x: Any, what: str) -> torch.Tensor:
    """`x` (tensor or array) as a float32 tensor, checked to be (N, 2, 32, 32) with N > 0."""
    try:
        t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    except (TypeError, ValueError, RuntimeError) as exc:
        kind = type(x).__name__
        raise ShapeError(f"{what}: expected a (N, 2, 32, 32) array, got {kind}") from exc
    if t.dim() != 4 or tuple(t.shape[1:]) != (2, 32, 32):
        raise ShapeError(f"{what}: expected shape (N, 2, 32, 32), got {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ShapeError(f"{what}: no samples")
    return t.to(torch.float32)


def hard_sigmoid_study(
    model: nn.Module,
    eval_x: torch.Tensor | np.ndarray,
    *,
    train_x: torch.Tensor | np.ndarray | None = None,
    val_x: torch.Tensor | np.ndarray | None = None,
    finetune_epochs: int = 0,
    lr: float = 1e-4,
    scope: Scope | str = "encoder",
    convention: str = "linear",
    batch_size: int = 200,
    seed: int = 0,
) -> HardSigmoidResult:
    """Substitute hard-sigmoid (`replace_sigmoid`) and measure what it costs in NMSE.

    `eval_x` (N, 2, 32, 32) gives the NMSE before and after substitution. With
    `finetune_epochs` > 0 the substituted model is fine-tuned end to end on `train_x` with the
    papers' recipe at a small constant learning rate `lr` (Adam, MSE, `batch_size`), using
    `csideploy.train.finetune`, which keeps the epoch with the best NMSE on `val_x` (default:
    the last tenth of `train_x`, held out); the result is evaluated again on `eval_x`.
    `finetune_seconds` is the fine-tune's wall time. The input model is not modified.
    """
    eval_x = _as_csi(eval_x, "eval_x")
    if finetune_epochs < 0:
        raise CsiDeployError(f"finetune_epochs must be >= 0, got {finetune_epochs}")
    if finetune_epochs and train_x is None:
        raise CsiDeployError("fine-tuning needs training data: pass train_x")
    before = model_nmse_db(model, eval_x, convention=convention)
    report = replace_sigmoid(model, scope=scope)
    new_model = report.model
    after = (
        before
        if report.nothing_to_replace
        else model_nmse_db(new_model, eval_x, convention=convention)
    )
    finetuned = seconds = None
    samples = 0
    if finetune_epochs:
        train_x = _as_csi(train_x, "train_x")
        if val_x is not None:
            val_x = _as_csi(val_x, "val_x")
        start = time.perf_counter()
        new_model = _finetune(
            new_model,
            train_x,
            val_x,
            epochs=finetune_epochs,
            lr=lr,
            batch_size=batch_size,
            seed=seed,
        )
        seconds = time.perf_counter() - start
        samples = int(train_x.shape[0])
        finetuned = model_nmse_db(new_model, eval_x, convention=convention)
    new_model.eval()
    return HardSigmoidResult(
        model_name=report.model_name,
        scope=report.scope,
        replaced=tuple(str(r) for r in report.replaced),
        convention=convention,
        n_eval=int(eval_x.shape[0]),
        nmse_before_db=before,
        nmse_after_db=after,
        nmse_finetuned_db=finetuned,
        finetune_epochs=finetune_epochs,
        finetune_samples=samples,
        finetune_seconds=seconds,
        model=new_model,
    )


def _finetune(
    model: nn.Module,
    train_x: torch.Tensor,
    val_x: torch.Tensor | None,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> nn.Module:
    """`csideploy.train.finetune`: constant `lr`, Adam, MSE; keeps the best validation epoch.

    Without `val_x` the last tenth of `train_x` is held out for that choice.
    """
    from csideploy.train import finetune

    if val_x is None:
        held = max(1, len(train_x) // 10)
        if len(train_x) <= held:
            raise CsiDeployError("fine-tuning needs at least 2 training samples or a val_x")
        train_x, val_x = train_x[:-held], train_x[-held:]
    result = finetune(
        model,
        train_x,
        val_x,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        device="cpu",
    )
    return result.model.eval()
