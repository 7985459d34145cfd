"""Fine-tuning, the adaptation ladder's last rung: ``retrieve train --target T --finetune last:N``.

The last ``N`` transformer blocks of the index's encoder are unfrozen and trained together
with a linear head (one logit per target) on the labelled windows, whose audio is decoded
again from the indexed files at the spans the index stores. Everything else stays frozen
and bit-identical. The result is a checkpoint in the encoder's own format that a new index
loads with ``--model`` (the summary prints the exact command).

Recipe (each a field of :class:`FinetuneOptions`):

* data: windows labelled ``positive`` / ``negative`` for the targets (``uncertain`` ones and
  unlabelled windows are left out); several targets share the backbone, one logit each,
  and a window unlabelled for a target does not enter that target's loss;
* split: whole groups are held out for validation (each file, or each value of
  ``group_column``), stratified on the first target's labels, by sklearn's
  ``StratifiedGroupKFold`` with ``val_folds`` folds (the first is the validation set);
* model: the window vector is the encoder's hidden state mean-pooled over frames, L2
  normalised and scaled by ``sqrt(D)`` (as :mod:`retrieval.heads` does), then a linear head;
  the network runs in eval mode (no dropout, no LayerDrop), so a step depends only on the
  data, the order and the seed;
* loss: binary cross-entropy per target, positives and negatives weighted to equal totals;
* optimiser: AdamW, ``lr`` for the blocks (1e-5) and ``head_lr`` for the head (1e-3),
  ``weight_decay``; mini-batches of ``batch_size`` windows in a seeded order each epoch;
* early stopping: after every epoch the validation loss is measured; training stops after
  ``patience`` epochs without a better one (or at ``epochs``) and the best epoch's weights
  are written.

Seeded and deterministic on the CPU (one machine, one thread count): the same labels, options
and seed give the same checkpoint; CUDA kernels may add run-to-run rounding. Each epoch runs
the whole network forward over every window (the frozen blocks' outputs are not cached).
"""

from __future__ import annotations

import json
import math
import shlex
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from retrieval.errors import InputError

if TYPE_CHECKING:
    import torch

    from retrieval.adapt import Adapter
    from retrieval.encoders.tuning import Tunable

#: Folder under the index where adapted checkpoints go by default.
FINETUNE_DIR = "finetuned"
#: What was trained, next to the checkpoint.
SUMMARY_FILE = "finetune.json"
#: The jointly trained head (``weight (T, D)``, ``bias (T,)`` float32, ``targets``), next to the checkpoint.
HEAD_FILE = "finetune_head.npz"


@dataclass(frozen=True)
class FinetuneOptions:
    """How to fine-tune (see the module docstring). Checked when built (:class:`InputError`)."""

    blocks: int
    epochs: int = 20
    patience: int = 3
    lr: float = 1e-5
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 8
    val_folds: int = 5
    group_column: str | None = None
    seed: int = 0
    device: str = "cpu"
    out: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name in ("blocks", "epochs", "patience", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"fine-tuning {name} must be a whole number >= 1; got {value!r}")
        if self.val_folds < 2:
            raise InputError(f"val_folds must be >= 2 (1/val_folds of the groups are held out); got {self.val_folds}")
        for name in ("lr", "head_lr"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value < 1):
                raise InputError(f"fine-tuning {name} must lie in (0, 1); got {value!r}")
        if not 0 <= self.weight_decay < 1:
            raise InputError(f"weight_decay must lie in [0, 1); got {self.weight_decay!r}")

    def recipe(self) -> dict[str, Any]:
        """The training settings as recorded in the summary."""
        out = asdict(self)
        out.pop("out")
        return {**out, "optimizer": "AdamW", "loss": "balanced binary cross-entropy",
                "pooling": "mean over frames, L2-normalised, x sqrt(D)", "mode": "eval (no dropout)"}


def parse_finetune(text: str) -> int:
    """``"last:N"`` -> ``N`` (the number of final transformer blocks to unfreeze).

    Raises:
        InputError: any other form, or ``N < 1``.
    """
    kind, sep, count = str(text).strip().partition(":")
    if kind.strip().lower() != "last" or not sep or not count.strip().isdigit() or int(count) < 1:
        raise InputError(f"--finetune takes last:N, N >= 1 (the last N transformer blocks); got {text!r}")
    return int(count)


# -- labelled windows ---------------------------------------------------------------------------


@dataclass
class LabelledWindows:
    """The training material: one row per labelled window.

    Attributes:
        window_ids: ``(n,)`` int64 window ids.
        y: ``(n, T)`` float32, 1 positive, 0 negative, NaN unlabelled for that target.
        groups: ``(n,)`` group of each window (``file:<id>`` or the group column's value as text).
        files: ``(n,)`` ``(root, stored path)`` of each window's file.
        spans: ``(n, 2)`` int64 ``[start, end)`` samples at the index's sample rate.
    """

    window_ids: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    files: list[tuple[str, str]]
    spans: np.ndarray


def labelled_windows(adapter: Adapter, targets: Sequence[str], group_column: str | None = None) -> LabelledWindows:
    """Gather the positive and negative windows of ``targets`` with their files, spans and groups.

    Raises:
        InputError: an unknown group column (listing the known ones), or a target without a
            positive or a negative window.
    """
    store = adapter.store
    if group_column is not None and group_column not in store.db.file_columns():
        known = ", ".join(store.db.metadata_columns())
        raise InputError(f"--group-column {group_column!r} is not a column of this index; it has: {known}")
    resolved = adapter.labels_db.window_labels(list(targets))
    resolved = resolved[resolved["label"] != "uncertain"]
    for t in targets:
        mine = resolved[resolved["target"] == t]["label"]
        n_pos, n_neg = int((mine == "positive").sum()), int((mine == "negative").sum())
        if not n_pos or not n_neg:
            raise InputError(f"fine-tuning needs positive and negative windows for {t!r}; it has {n_pos} positive "
                             f"and {n_neg} negative: label some of each with `retrieve label`")
    ids = np.unique(resolved["window_id"].to_numpy(np.int64))
    y = np.full((len(ids), len(targets)), np.nan, np.float32)
    rows = np.searchsorted(ids, resolved["window_id"].to_numpy(np.int64))
    cols = np.array([list(targets).index(t) for t in resolved["target"]], np.int64)
    y[rows, cols] = (resolved["label"] == "positive").to_numpy(np.float32)
    extra = [group_column] if group_column and group_column not in ("path", "root") else []
    found = store.db.hit_rows(ids, ["path", "root", *extra])
    default_root = store.db.get("corpus_root") or ""
    files, spans, groups = [], [], []
    for i in ids.tolist():
        r = found[i]
        files.append((str(r["root"]) if r["root"] is not None else default_root, str(r["path"])))
        spans.append((int(r["start_sample"]), int(r["end_sample"])))
        value = r.get(group_column) if group_column else None
        groups.append(f"file:{r['file_id']}" if value is None else str(value))
    return LabelledWindows(ids, y, np.array(groups, dtype=object), files, np.array(spans, np.int64).reshape(-1, 2))


def split_groups(y: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train rows, validation rows)``: whole groups held out, stratified on the first target.

    Uses sklearn's ``StratifiedGroupKFold(min(folds, groups), shuffle=True, random_state=seed)``
    and keeps its first fold for validation.

    Raises:
        InputError: fewer than two groups.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(set(groups.tolist()))
    if n_groups < 2:
        raise InputError(f"fine-tuning holds out whole groups (files, or --group-column values) for validation, so "
                         f"the labelled windows must come from at least 2; they come from {n_groups}")
    strat = np.where(np.isnan(y[:, 0]), 2, y[:, 0]).astype(np.int64)
    splitter = StratifiedGroupKFold(n_splits=min(folds, n_groups), shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # "the least populated class has only k members": expected with few labels
        warnings.simplefilter("ignore", UserWarning)
        train, val = next(splitter.split(np.zeros(len(y)), strat, groups))
    return np.sort(train), np.sort(val)


def decode_windows(windows: LabelledWindows, sample_rate: int) -> list[np.ndarray]:
    """Each window's audio, ``(end - start,)`` float32 mono at ``sample_rate``; each file decoded once,
    as ingest decodes it (whole file, resampled, then cut at the stored sample offsets)."""
    from retrieval.audio.decode import load
    from retrieval.audio.paths import real_path

    out: list[np.ndarray] = [np.zeros(0, np.float32)] * len(windows.files)
    by_file: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(windows.files):
        by_file.setdefault(key, []).append(i)
    for (root, rel), rows in by_file.items():
        path = real_path(root, rel)
        if not path.is_file():
            raise InputError(f"labelled file {rel} is no longer under {root}; re-run `retrieve index` or put it back")
        audio = load(path, sample_rate)
        for i in rows:
            a, b = windows.spans[i]
            out[i] = np.ascontiguousarray(audio[a:b], np.float32)
    return out


# -- training ------------------------------------------------------------------------------------


def trainable_parameters(model: torch.nn.Module, blocks: Sequence[torch.nn.Module]) -> dict[str, torch.nn.Parameter]:
    """Name -> parameter of ``blocks``, leaving out any parameter a module outside them also holds
    (BEATs shares one relative-position table across every layer: it stays frozen)."""
    chosen = {id(b) for b in blocks}
    outside: set[int] = set()
    seen: set[int] = set()
    stack = [model]
    while stack:  # every module reachable from the root without passing through a chosen block
        m = stack.pop()
        if id(m) in seen or id(m) in chosen:
            continue
        seen.add(id(m))
        outside.update(id(p) for p in m.parameters(recurse=False))
        stack.extend(m.children())
    wanted = {id(p) for b in blocks for p in b.parameters()} - outside
    return {name: p for name, p in model.named_parameters() if id(p) in wanted}


def _balance(y: np.ndarray) -> np.ndarray:
    """``(n, T)`` labels with NaN -> ``(n, T)`` float32 weights: per target, positives and negatives
    each total half the labelled rows; 0 where unlabelled."""
    w = np.zeros_like(y, dtype=np.float32)
    for j in range(y.shape[1]):
        col = y[:, j]
        labelled = ~np.isnan(col)
        for side in (labelled & (col == 1), labelled & (col == 0)):
            if side.any():
                w[side, j] = labelled.sum() / (2.0 * side.sum())
    return w


@dataclass
class Trained:
    """What :func:`train` returns: the best epoch's tensors and the history."""

    state: dict[str, Any]
    head_weight: np.ndarray
    head_bias: np.ndarray
    history: list[dict[str, float]]
    best_epoch: int
    best_val_loss: float
    val_loss_before: float
    n_parameters: int


def train(tun: Tunable, audio: list[np.ndarray], y: np.ndarray, train_rows: np.ndarray, val_rows: np.ndarray,
          n_targets: int, options: FinetuneOptions) -> Trained:
    """Train the last ``options.blocks`` blocks of ``tun`` and a linear head; keep the best epoch.

    Args:
        audio: one float32 window per row, at the encoder's rate.
        y: ``(n, T)`` float32 labels (NaN = unlabelled for that target).
        train_rows, val_rows: row numbers of the split.
    """
    import torch

    torch.manual_seed(options.seed)
    model = tun.model
    model.eval()
    blocks = list(tun.blocks())[-options.blocks:]
    params = trainable_parameters(model, blocks)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    device = next(model.parameters()).device
    dim = int(tun.dim)
    gen = torch.Generator().manual_seed(options.seed)
    head = torch.nn.Linear(dim, n_targets).to(device)
    with torch.no_grad():
        head.weight.copy_(torch.randn(n_targets, dim, generator=gen) * (0.01 / math.sqrt(dim)))
        head.bias.zero_()
    opt = torch.optim.AdamW([{"params": list(params.values()), "lr": options.lr},
                             {"params": list(head.parameters()), "lr": options.head_lr}],
                            weight_decay=options.weight_decay)
    y_t = torch.from_numpy(np.nan_to_num(y, nan=0.0)).to(device)
    w_all = np.zeros_like(y)
    w_all[train_rows] = _balance(y[train_rows])
    w_all[val_rows] = _balance(y[val_rows])
    w_t = torch.from_numpy(w_all).to(device)

    def loss_parts(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(weighted BCE summed over the rows' labelled entries, their total weight)."""
        logits = head(_vectors(tun, audio, rows, device) * math.sqrt(dim))
        idx = torch.from_numpy(rows).to(device)
        w = w_t[idx]
        total = torch.nn.functional.binary_cross_entropy_with_logits(logits, y_t[idx], weight=w, reduction="sum")
        return total, w.sum()

    def val_loss() -> float:
        """Weighted mean BCE over the validation windows, in batches of ``batch_size``."""
        total, weight = 0.0, 0.0
        with torch.no_grad():
            for a in range(0, len(val_rows), options.batch_size):
                t, w = loss_parts(val_rows[a:a + options.batch_size])
                total, weight = total + float(t), weight + float(w)
        return total / weight if weight > 0 else float("nan")

    before = val_loss()
    rng = np.random.default_rng(options.seed)
    history: list[dict[str, float]] = []
    best = (math.inf, 0, _snapshot(params), _snapshot(dict(head.named_parameters())))
    stale = 0
    for epoch in range(1, options.epochs + 1):
        order = rng.permutation(train_rows)
        total, count = 0.0, 0
        for a in range(0, len(order), options.batch_size):
            rows = order[a:a + options.batch_size]
            opt.zero_grad(set_to_none=True)
            t, w = loss_parts(rows)
            loss = t / w.clamp_min(1e-12)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(rows)
            count += len(rows)
        v = val_loss()
        history.append({"epoch": epoch, "train_loss": total / max(count, 1), "val_loss": v})
        if v < best[0] - 1e-7:
            best = (v, epoch, _snapshot(params), _snapshot(dict(head.named_parameters())))
            stale = 0
        else:
            stale += 1
            if stale >= options.patience:
                break
    _, best_epoch, state, head_state = best
    if best_epoch == 0:
        raise InputError(f"fine-tuning diverged: no epoch gave a finite validation loss ({history[-1]['val_loss']}); "
                         f"lower --lr ({options.lr:g}) and --head-lr ({options.head_lr:g})")
    return Trained(state=state, head_weight=head_state["weight"].numpy(), head_bias=head_state["bias"].numpy(),
                   history=history, best_epoch=best_epoch, best_val_loss=float(best[0]), val_loss_before=before,
                   n_parameters=int(sum(p.numel() for p in params.values())))


def _snapshot(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v.detach().to("cpu").clone() for k, v in params.items()}


def _vectors(tun: Tunable, audio: list[np.ndarray], rows: np.ndarray, device: Any) -> torch.Tensor:
    """``(len(rows), D)`` window vectors, L2-normalised; rows of one length run as one unpadded pass,
    a window shorter than the encoder's minimum is zero-padded to it."""
    import torch

    need = tun.min_samples()
    lengths = np.array([max(len(audio[i]), need) for i in rows], np.int64)
    out: list[torch.Tensor | None] = [None] * len(rows)
    for length in np.unique(lengths):
        pick = np.flatnonzero(lengths == length)
        batch = np.zeros((len(pick), int(length)), np.float32)
        for j, k in enumerate(pick):
            x = audio[rows[k]]
            batch[j, :len(x)] = x
        vecs = tun.window_vectors(torch.from_numpy(batch).to(device))
        for j, k in enumerate(pick):
            out[k] = vecs[j]
    return torch.nn.functional.normalize(torch.stack(out), dim=-1)  # type: ignore[arg-type]


# -- the whole step ------------------------------------------------------------------------------


def finetune(adapter: Adapter, targets: Sequence[str], options: FinetuneOptions) -> dict[str, Any]:
    """Fine-tune the index's encoder on the labels of ``targets``; write the checkpoint and summary.

    Returns:
        The summary written to ``finetune.json`` beside the checkpoint: ``model`` (what to pass
        as ``--model``), ``command`` (a ``retrieve index`` that builds an index with it), base
        checkpoint, blocks, epochs, losses, label counts and the training recipe.

    Raises:
        InputError: logmel (no weights), ``N`` above the encoder's block count, too few labels
            or groups, an unknown group column, or a labelled file gone from disk.
    """
    from retrieval.configure import encoder_for
    from retrieval.encoders.tuning import TUNABLE_FAMILIES, no_weights_message, tunable
    from retrieval.store.labels import check_target

    t0 = time.perf_counter()
    recipe = adapter.recipe
    if recipe.encoder not in TUNABLE_FAMILIES:
        raise InputError(no_weights_message(recipe.encoder))
    targets = [check_target(t) for t in targets]
    if not targets:
        raise InputError("name at least one --target")
    windows = labelled_windows(adapter, targets, options.group_column)
    train_rows, val_rows = split_groups(windows.y, windows.groups, options.val_folds, options.seed)
    encoder = encoder_for(recipe, options.device, index=adapter.store.root, precision="fp32")
    tun = tunable(encoder)
    n_blocks = len(tun.blocks())
    if options.blocks > n_blocks:
        raise InputError(f"--finetune last:{options.blocks} asks for more blocks than the {n_blocks} transformer "
                         f"block(s) that shape this index's vectors ({recipe.encoder} {recipe.location}, layer "
                         f"{recipe.encoder_options.get('layer') or 'last'}); choose last:1 .. last:{n_blocks}")
    audio = decode_windows(windows, recipe.sample_rate)
    result = train(tun, audio, windows.y, train_rows, val_rows, len(targets), options)
    out = _out_dir(adapter, targets, options.out)
    model_path = tun.save(result.state, out)
    np.savez(out / HEAD_FILE, weight=result.head_weight.astype(np.float32),
             bias=result.head_bias.astype(np.float32), targets=np.array(targets))
    summary = {
        "targets": targets, "encoder": recipe.encoder, "base_checkpoint": recipe.location,
        "base_digest": recipe.digest, "index": str(adapter.store.root), "index_recipe_hash": recipe.hash(),
        "blocks": options.blocks, "blocks_total": n_blocks,
        "trained_parameters": result.n_parameters, "trained_tensors": sorted(result.state),
        "epochs": len(result.history), "best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
        "val_loss_before": result.val_loss_before, "history": result.history,
        "labels": _counts(windows, targets, train_rows, val_rows),
        "windows": {"train": int(len(train_rows)), "val": int(len(val_rows))},
        "groups": {"column": options.group_column or "file",
                   "train": len(set(windows.groups[train_rows].tolist())),
                   "val": len(set(windows.groups[val_rows].tolist()))},
        "recipe": options.recipe(), "model": str(model_path),
        "command": index_command(adapter, model_path),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def _counts(windows: LabelledWindows, targets: Sequence[str], train_rows: np.ndarray,
            val_rows: np.ndarray) -> dict[str, dict[str, dict[str, int]]]:
    out: dict[str, dict[str, dict[str, int]]] = {}
    for j, t in enumerate(targets):
        out[t] = {}
        for part, rows in (("train", train_rows), ("val", val_rows)):
            col = windows.y[rows, j]
            out[t][part] = {"positive": int((col == 1).sum()), "negative": int((col == 0).sum())}
    return out


def _out_dir(adapter: Adapter, targets: Sequence[str], out: Path | None) -> Path:
    """``out`` (created; must be empty), else ``<index>/finetuned/<targets>-<UTC time>/``."""
    if out is None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        base = Path(adapter.store.root) / FINETUNE_DIR / f"{'+'.join(targets)}-{stamp}"
        out, n = base, 1
        while out.exists():
            n += 1
            out = base.with_name(f"{base.name}-{n}")
    out = Path(out).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"--out {out} exists and is not an empty folder; name a new one")
    out.mkdir(parents=True, exist_ok=True)
    return out


def index_command(adapter: Adapter, model_path: Path) -> str:
    """The ``retrieve index`` command that builds a new index like this one but with ``model_path``."""
    recipe = adapter.recipe
    roots = adapter.store.db.roots() or [adapter.store.db.get("corpus_root") or "CORPUS"]
    new_index = Path(adapter.store.root).with_name(Path(adapter.store.root).name + "-finetuned")
    parts = ["retrieve", "index", *roots, "--index", str(new_index), "--encoder", recipe.encoder,
             "--model", str(model_path)]
    layer = recipe.encoder_options.get("layer")
    if layer is not None:
        parts += ["--layer", str(layer)]
    for key, value in sorted((recipe.encoder_options.get("extra") or {}).items()):
        parts += ["--opt", f"{key}={value}"]
    parts += ["--window-s", f"{recipe.window_s:.10g}", "--hop-s", f"{recipe.hop_s:.10g}", "--pooling",
              recipe.pooling, "--postprocess", recipe.postprocess, "--precision", recipe.precision]
    parts += ["--keep-silent"] if recipe.silence_db is None else ["--silence-db", f"{recipe.silence_db:g}"]
    return shlex.join(parts)
