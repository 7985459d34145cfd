"""``retrieve label / labels / train / score / suggest``: the agile-modelling loop (:mod:`retrieval.adapt`).

Added to the ``retrieve`` group by :mod:`retrieval.cli` (:data:`COMMANDS`); rendering and parsing only.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from retrieval.options import HEAD_KINDS, STRATEGIES, WEAK_WEIGHT
from retrieval.cli_options import index_option, json_option, where_option, windows_option
from retrieval.render import Output, emit, output_options, rounded


def _targets(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def target_option(f):  # type: ignore[no-untyped-def]
    return click.option("--target", "target", required=True, metavar="T[,T2...]",
                        help="Target name(s), comma-separated; each names the column score_<target>.")(f)


@click.command("label")
@index_option
@click.option("--csv", "csv_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV of labels: path,start_s,end_s,target,label (label: positive, negative or uncertain; "
                   "empty start_s/end_s = the whole file).")
@click.option("--from-query", "clip", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Label the results of searching with this clip, by rank (--positive/--negative/--uncertain).")
@click.option("--target", help="Target the --from-query labels are for.")
@click.option("--positive", metavar="RANKS", help="Result ranks that are positive, e.g. 1-5,8.")
@click.option("--negative", metavar="RANKS", help="Result ranks that are negative, e.g. 6,9.")
@click.option("--uncertain", metavar="RANKS", help="Result ranks you cannot tell.")
@windows_option("Rank windows rather than files (as `retrieve query --windows` shows them).")
@click.option("-k", "k", type=click.IntRange(min=1),
              help="Results to search (default: the highest rank named).")
@where_option
@json_option
def label_cmd(index: str | None, csv_path: Path | None, clip: Path | None, target: str | None,
              positive: str | None, negative: str | None, uncertain: str | None, windows: bool, k: int | None,
              where: tuple[str, ...], as_json: bool) -> None:
    """Label windows for a target: from a CSV, or from a query's results by rank. Labels are kept by
    content and time span, so they survive moves, renames and re-indexing."""
    from retrieval.adapt import parse_ranks
    from retrieval.index import Index

    if (csv_path is None) == (clip is None):
        raise click.UsageError("give --csv FILE or --from-query CLIP")
    with Index.open(index) as idx:  # labels go to labels.sqlite: no writer of meta.duckdb, works during an ingest
        ad = idx.adapter()
        if csv_path is not None:
            n = ad.label_csv(csv_path)
            summary = {"labels": n, "source": str(csv_path)}
        else:
            if not target:
                raise click.UsageError("--from-query needs --target")
            by_rank = {lab: parse_ranks(text) for lab, text in
                       (("positive", positive), ("negative", negative), ("uncertain", uncertain))}
            named = [r for ranks in by_rank.values() for r in ranks]
            if not named:
                raise click.UsageError("name the ranks to label with --positive, --negative or --uncertain")
            hits = idx.search(clip, k or max(named), windows=windows, where=list(where))
            if max(named) > len(hits):
                raise click.ClickException(f"rank {max(named)} is past the {len(hits)} results; lower it or "
                                           "raise -k")
            n = 0
            for lab, ranks in by_rank.items():
                if ranks:
                    ids = hits["window_id"].to_numpy()[[r - 1 for r in ranks]]
                    n += ad.label_windows(ids.tolist(), target, lab, source=f"query:{clip.name}")
            summary = {"labels": n, "source": f"query:{clip}", "target": target}
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(f"stored {summary['labels']} label(s) from {summary['source']}")


@click.command("labels")
@index_option
@click.option("--target", help="Only these targets (comma-separated).")
@click.option("--counts", is_flag=True, help="One row per target and label with counts, instead of every label.")
@output_options
def labels_cmd(index: str | None, target: str | None, counts: bool, output: Output) -> None:
    """List the stored window labels (path, span, target, label, source, when)."""
    from retrieval.index import Index

    with Index.open(index) as idx:
        found = idx.adapter().labels(_targets(target) if target else None)
    if counts:
        grouped = found.groupby(["target", "label"]).size().reset_index(name="count")
        emit(output, grouped.to_dict(orient="records"), empty="no labels stored")
        return
    rows = found.drop(columns=["content_hash"]).to_dict(orient="records")
    emit(output, rows, formats={"start_s": rounded(3), "end_s": rounded(3)}, empty="no labels stored")


@click.command("train")
@index_option
@target_option
@click.option("--head", type=click.Choice(list(HEAD_KINDS)), default="linear", show_default=True,
              help="linear: logistic regression; mlp: one hidden layer. One-vs-rest for several targets.")
@click.option("--weak-negatives", type=click.FloatRange(min=0), default=WEAK_WEIGHT, show_default=True,
              help="Weight of each unlabelled window counted as a negative (0: labelled negatives only).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the weak-negative sample and the MLP (with --finetune: the split, order and head).")
@click.option("--finetune", "finetune", metavar="last:N",
              help="Instead of a head on frozen vectors, unfreeze the encoder's last N transformer blocks and "
                   "train them with a linear head on the labelled windows (decoded again from the files); "
                   "writes an adapted checkpoint for a new index. Model encoders only (not logmel).")
@click.option("--group-column", help="With --finetune: hold out whole groups of this metadata column for "
                                     "validation (default: whole files).")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path),
              help="With --finetune: folder for the checkpoint (default: <index>/finetuned/<target>-<time>/).")
@click.option("--epochs", type=click.IntRange(min=1), default=20, show_default=True,
              help="With --finetune: most epochs (early stopping on the validation loss may end sooner).")
@click.option("--patience", type=click.IntRange(min=1), default=3, show_default=True,
              help="With --finetune: stop after this many epochs without a better validation loss.")
@click.option("--lr", type=float, default=1e-5, show_default=True, help="With --finetune: AdamW rate of the blocks.")
@click.option("--head-lr", type=float, default=1e-3, show_default=True, help="With --finetune: AdamW rate of the head.")
@click.option("--device", default="cpu", show_default=True, help="With --finetune: torch device to train on.")
@output_options
def train_cmd(index: str | None, target: str, head: str, weak_negatives: float, seed: int, finetune: str | None,
              group_column: str | None, out: Path | None, epochs: int, patience: int, lr: float, head_lr: float,
              device: str, output: Output) -> None:
    """Fit a head per target on the frozen window vectors and store it in the index with its recipe hash;
    with --finetune last:N, fine-tune the encoder's last N blocks instead and write a checkpoint."""
    from retrieval.index import Index

    ctx = click.get_current_context()
    if finetune is None:
        given = [f"--{n.replace('_', '-')}" for n in ("group_column", "out", "epochs", "patience", "lr", "head_lr",
                                                      "device")
                 if ctx.get_parameter_source(n) == click.core.ParameterSource.COMMANDLINE]
        if given:
            raise click.UsageError(f"{', '.join(given)} only apply with --finetune last:N")
    if finetune is not None:
        from retrieval.finetune import parse_finetune

        given = [f"--{n.replace('_', '-')}" for n in ("head", "weak_negatives")
                 if ctx.get_parameter_source(n) == click.core.ParameterSource.COMMANDLINE]
        if given:
            raise click.UsageError(f"{', '.join(given)} do not apply with --finetune: it trains a linear head with "
                                   "the blocks on the labelled windows only")
        blocks = parse_finetune(finetune)
        with Index.open(index) as idx:
            summary = idx.adapter().finetune(_targets(target), blocks, group_column=group_column, out=out,
                                             epochs=epochs, patience=patience, lr=lr, head_lr=head_lr,
                                             seed=seed, device=device)
        emit(output, summary["history"], document=summary,
             formats={"train_loss": rounded(4), "val_loss": rounded(4)})
        if output == "table":
            click.echo(f"fine-tuned the last {summary['blocks']} of {summary['blocks_total']} blocks of "
                       f"{summary['base_checkpoint']} for {', '.join(summary['targets'])}: best epoch "
                       f"{summary['best_epoch']} of {summary['epochs']}, validation loss "
                       f"{summary['best_val_loss']:.4f} (before: {summary['val_loss_before']:.4f})")
            click.echo(f"checkpoint: {summary['model']}")
            click.echo(f"build an index with it:\n  {summary['command']}")
        return
    with Index.open(index, writable=True) as idx:
        summaries = idx.adapter().train(_targets(target), head=head, weak_negatives=weak_negatives,  # type: ignore[arg-type]
                                        seed=seed)
    emit(output, summaries)


@click.command("score")
@index_option
@target_option
@output_options
def score_cmd(index: str | None, target: str, output: Output) -> None:
    """Score every window with the target's head: window scores for suggest and a column score_<target>
    (each file's best window) for --where and `retrieve query --rank-by`."""
    from retrieval.index import Index

    with Index.open(index, writable=True) as idx:
        done = idx.adapter().score(_targets(target))
    emit(output, done)


@click.command("suggest")
@index_option
@target_option
@click.option("-n", "n", type=click.IntRange(min=1), default=20, show_default=True, help="Windows to suggest.")
@click.option("--strategy", type=click.Choice(list(STRATEGIES)), default="margin", show_default=True,
              help="margin: near the decision boundary and spread out (far-apart windows among the 5n "
                   "nearest it); top: highest scores; random: a seeded sample.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --strategy random.")
@output_options
def suggest_cmd(index: str | None, target: str, n: int, strategy: str, seed: int, output: Output) -> None:
    """The next windows to label: unlabelled windows picked from the stored scores."""
    from retrieval.index import Index

    with Index.open(index) as idx:
        found = idx.adapter().suggest(_targets(target), n, strategy=strategy, seed=seed)  # type: ignore[arg-type]
    score_cols = [c for c in found.columns if c.startswith("score_")] + ["margin"]
    emit(output, found.to_dict(orient="records"), formats={c: rounded(4) for c in score_cols + ["start_s", "end_s"]},
         empty="no unlabelled scored windows left")


#: The commands this module defines, for :mod:`retrieval.cli` to add.
COMMANDS: list[click.Command] = [label_cmd, labels_cmd, train_cmd, score_cmd, suggest_cmd]
