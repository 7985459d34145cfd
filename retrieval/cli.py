"""The ``retrieve`` command: argument parsing and rendering only.

Each command makes one library call. Every exception becomes a one-line message with exit
code 1 in one place (:class:`_Group`); row output goes through one decorator and one
printer (:mod:`retrieval.render`), and progress bars through one switch (:func:`progress_option`).
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import click

from retrieval.encoders.precision import SlowPrecisionWarning
from retrieval.errors import RetrievalError
from retrieval.options import (
    DEFAULT_POSTPROCESS,
    ENGINES,
    EXPORT_LEVELS,
    INDEX_TYPE_CHOICES,
    LEVELS,
    MATCH_MODES,
    POOLING_MODES,
    POSTPROCESS_MODES,
    PRECISION_CHOICES,
    SEVERITIES,
    VECTOR_KINDS,
)
from retrieval.cli_options import (LevelChoice, index_option, json_option, progress_option, where_option,
                                   windows_option)
from retrieval.render import Output, clean, emit, output_options, rounded, table as _table

#: Columns shown in human-readable hit tables, after rank/score/path/time.
_TABLE_SKIP = {"window_id", "file_id", "duration_s", "rank", "score", "path", "start_s", "end_s"}
#: Set to 1 to see the traceback of an unexpected error instead of its one-line summary.
TRACEBACK_ENV = "RETRIEVE_TRACEBACK"


class _Group(click.Group):
    """Turns every exception into ``Error: <message>`` and exit code 1, with no traceback.

    Library errors (:class:`RetrievalError`) carry their own message and fix. File-system
    and database errors, and anything unexpected, are summarised in one line too; set
    ``RETRIEVE_TRACEBACK=1`` to see where an unexpected one came from.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always", SlowPrecisionWarning)
                warnings.showwarning = _show_warning
                return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except RetrievalError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted; committed batches are kept and a re-run resumes", err=True)
            sys.exit(130)
        except Exception as exc:
            from retrieval.store.db import describe_failure

            message = describe_failure(exc)  # a store failure (damaged DuckDB block, full disk), with its fix
            if message is not None:
                raise click.ClickException(message) from None
            if isinstance(exc, OSError):
                raise click.ClickException(_first_line(exc)) from None
            if os.environ.get(TRACEBACK_ENV):
                raise
            raise click.ClickException(f"unexpected {type(exc).__name__}: {_first_line(exc)} "
                                       f"(set {TRACEBACK_ENV}=1 to see where, and please report it)") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or repr(exc)
    return text.splitlines()[0]


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """Print the library's own warnings as ``warning: <message>`` lines; others as Python does."""
    if issubclass(category, SlowPrecisionWarning):
        click.echo(f"warning: {message}", err=True)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _encoder_names() -> list[str]:
    from retrieval.encoders.registry import names

    return names()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="retrieve", prog_name="retrieve")
def cli() -> None:
    """Search audio by meaning: index a folder with a frozen encoder, then query it by example or text."""


# -- index ---------------------------------------------------------------------------------


def _parse_opts(values: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--opt")
        out[key.strip()] = json.loads(raw) if raw[:1] in "[{\"" or raw in ("true", "false") or _is_number(raw) else raw
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@cli.command("index")
@click.argument("corpus", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--index", "index", metavar="PATH|NAME",
              help="Where to write. Default: indexes/<first corpus folder name>.")
@click.option("--encoder", type=click.Choice(_encoder_names()), help="Encoder family. Default: logmel, or the index's.")
@click.option("--model", help="Checkpoint: hub id or local path (encoders with weights).")
@click.option("--layer", help="Hidden layer to read: N (0 = input embeddings), 'last' or 'mean'.")
@click.option("--opt", "opts", multiple=True, metavar="KEY=VALUE", help="Encoder-specific setting, e.g. feature=pcen.")
@click.option("--window-s", type=float, help="Analysis window in seconds (default: the encoder's).")
@click.option("--hop-s", type=float, help="Hop between windows in seconds (default: the encoder's).")
@click.option("--pooling", type=click.Choice(POOLING_MODES),
              help="How frames become window and file vectors (default: the encoder's). "
                   "'pyramid' adds the means of halves and quarters; 'none' keeps window vectors only.")
@click.option("--postprocess", type=click.Choice(POSTPROCESS_MODES),
              help=f"Label-free post-processing fitted on the corpus [default: {DEFAULT_POSTPROCESS}, or the index's].")
@click.option("--precision", type=click.Choice(PRECISION_CHOICES),
              help="Inference precision of model encoders (default fp32, or the index's). 'auto': the fastest "
                   "mode measured on this kind of CPU within 0.999 cosine of fp32 (bf16 with AMX, else int8 "
                   "with AVX2, else fp32; the index records the mode it picked). fp16 on CUDA only, int8 on "
                   "CPU only.")
@click.option("--device", default="cpu", show_default=True, help="torch device for model encoders.")
@click.option("--labels", "labels_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV with a 'file' or 'path' column (relative to CORPUS); every column becomes metadata.")
@click.option("--labels-key", metavar="COLUMN",
              help="The --labels CSV's column of file paths, e.g. filename (default: 'file' or 'path').")
@click.option("--silence-db", type=float, help="Windows below this RMS level (dBFS) stay out of the index [-60].")
@click.option("--keep-silent", is_flag=True, help="Index every window, however quiet.")
@click.option("--commit-every", type=int,
              help="Files per transaction [64 holding 4 minutes of audio, at most 1024; with --engine ray, "
                   "a shard closes at 16384 windows or 30 s].")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Windows per encoder call.")
@click.option("--workers", type=click.IntRange(min=0),
              help="Decoding processes running beside the encoder (0: decode in the main process). Default: "
                   "for logmel one per core left idle by other processes (at most cores - 1), one for model "
                   "encoders, none for under 64 files or 64 MB to embed.")
@click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
              help="Where files are decoded and embedded: this process, or a Ray cluster (pip install "
                   "'retrieve[ray]'; planning, the index and its summary are the same).")
@click.option("--ray-address", metavar="auto|HOST:PORT",
              help="With --engine ray: the cluster's head (default: start a Ray on this machine).")
@click.option("--actors", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --engine ray: embedding actors, each loading the encoder once.")
@click.option("--gpus-per-actor", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="With --engine ray: GPUs each actor reserves; above 0 the actors run the encoder on cuda.")
@click.option("--index-type", type=click.Choice(INDEX_TYPE_CHOICES),
              help="FAISS index for search [auto: picks by corpus size; see `retrieve info`]. "
                   "Omitted on an existing index: keep its kind.")
@click.option("--refit", is_flag=True,
              help="Refit the post-processing and rebuild FAISS now, even after a change small enough "
                   "to apply in place (see 'postprocess fit' in `retrieve info`).")
@click.option("--replace", is_flag=True,
              help="The CORPUS folders replace the index's roots (files found again by content keep their "
                   "vectors). Without it a folder that is not a root of the index is refused, unless one that "
                   "is is named too (then it is added beside them).")
@click.option("--allow-removals", is_flag=True,
              help="Let the run remove more than 20% of the indexed files, or every file of a root that is "
                   "now empty. Without it such a run stops before changing anything.")
@click.option("--copies", is_flag=True,
              help="Also compute copy frames (content identity, about 2 kB per second of audio) for `retrieve "
                   "duplicates` and `locate --match copy`. Kept on by later runs; changes no vector.")
@click.option("--dry-run", is_flag=True,
              help="Print what would be added, changed, moved, removed and kept, and change nothing.")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: when a terminal).")
@json_option
def index_cmd(corpus: tuple[Path, ...], index: str | None, encoder: str | None, model: str | None, layer: str | None,
              opts: tuple[str, ...], window_s: float | None, hop_s: float | None, pooling: str | None,
              postprocess: str | None, precision: str | None, device: str, labels_csv: Path | None,
              silence_db: float | None, keep_silent: bool, commit_every: int | None, batch_size: int,
              workers: int | None, engine: str, ray_address: str | None, actors: int, gpus_per_actor: float,
              index_type: str | None, refit: bool, labels_key: str | None, replace: bool,
              allow_removals: bool, copies: bool, dry_run: bool, progress: bool | None, as_json: bool) -> None:
    """Index every audio file under CORPUS, one folder or several (re-runs embed only new or changed files).

    Paths are kept relative to their folder. On an existing index the folders named are
    updated and its other folders are left as they are; a new folder is added beside them.
    With no CORPUS, --index X updates every folder of index X.
    """
    from retrieval.configure import Choices
    from retrieval.index_paths import index_path_for
    from retrieval.ingest import IngestOptions, ingest

    choices = Choices(encoder=encoder, model=model, layer=layer, extra=_parse_opts(opts), window_s=window_s,
                      hop_s=hop_s, pooling=pooling, postprocess=postprocess, precision=precision,
                      silence_db=float("-inf") if keep_silent else silence_db, device=device)
    options = IngestOptions(labels_csv=labels_csv, commit_every=commit_every, batch_size=batch_size,
                            workers=workers, index_type=index_type, refit=refit,
                            progress=sys.stderr.isatty() if progress is None else progress,
                            on_warning=lambda line: click.echo(f"warning: {line}", err=True),
                            labels_key=labels_key, replace=replace, allow_removals=allow_removals, dry_run=dry_run,
                            copies=copies)
    if not corpus and not index:
        raise click.UsageError("name a CORPUS folder, or --index X to update every folder of index X")
    if engine != "ray" and (ray_address or actors != 1 or gpus_per_actor):
        raise click.UsageError("--ray-address, --actors and --gpus-per-actor go with --engine ray")
    if engine == "ray":  # the only place the CLI reaches for Ray
        from retrieval.ray_ingest import RayEngine

        options.embedder = RayEngine(ray_address, actors, gpus_per_actor)
        options.embedder.check_address()
    target = index_path_for(corpus[0], index) if corpus else index_path_for(Path("."), index)
    summary = ingest(list(corpus), target, choices, options)
    if dry_run:
        from retrieval.ingest import IngestPlan

        if as_json:
            click.echo(json.dumps(summary.plan))
            return
        click.echo(f"{summary.index} (dry run, nothing changed): ", nl=False)
        click.echo("\n".join(IngestPlan(**summary.plan).lines()))
        return
    if as_json:
        click.echo(summary.to_json())
        return
    s = summary
    click.echo(f"{s.index}: {s.files_indexed} indexed, {s.files_unchanged} unchanged, {s.files_moved} moved, "
               f"{s.files_removed} removed, {s.files_failed} failed, {s.files_silent} silent; "
               f"{s.windows} window vectors in {s.seconds:.1f} s"
               + (f" ({s.realtime_factor:.0f}x realtime)" if s.audio_seconds else ""))
    click.echo(f"faiss: {s.vectors_update}")


# -- query ---------------------------------------------------------------------------------


@cli.command("query")
@click.argument("clip", type=click.Path(path_type=Path))
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="Results to return.")
@index_option
@windows_option("Return every matching window instead of one row per file.")
@click.option("--start-s", type=float, help="Use the query clip from this time (seconds).")
@click.option("--end-s", type=float, help="Use the query clip up to this time (seconds).")
@click.option("--rank-by", metavar="COLUMN",
              help="Re-rank the most similar hits (10 x k, at least 100) by this column, highest first, "
                   "e.g. score_rooster after `retrieve score --target rooster`.")
@where_option
@output_options
def query_cmd(clip: Path, k: int, index: str | None, windows: bool, start_s: float | None, end_s: float | None,
              rank_by: str | None, where: tuple[str, ...], output: Output) -> None:
    """Search by example: the files (or windows) that sound most like CLIP."""
    if not clip.is_file():
        raise click.ClickException(f"query clip {clip} does not exist or is not a file")
    if not rank_by and not where:  # a plain search: from the lookup the last writer left, without DuckDB
        from retrieval import quick_query
        from retrieval.index_paths import find_index

        quick = quick_query.search_rows(find_index(index), clip, k, windows=windows, start_s=start_s, end_s=end_s)
        if quick is not None:
            _render_rows(*quick, output)
            return
    from retrieval.index import Index

    with Index.open(index) as idx:
        if rank_by:  # re-ranks a pool of hits by a stored column: the DataFrame path
            hits = idx.search(clip, k, windows=windows, where=list(where), start_s=start_s, end_s=end_s,
                              rank_by=rank_by)
        else:
            rows, warnings = idx.search_rows(clip, k, windows=windows, where=list(where), start_s=start_s,
                                             end_s=end_s)
    if rank_by:
        _render_hits(hits, output)
    else:
        _render_rows(rows, warnings, output)


@cli.command("text")
@click.argument("description")
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="Results to return.")
@index_option
@windows_option("Return every matching window instead of one row per file.")
@where_option
@output_options
def text_cmd(description: str, k: int, index: str | None, windows: bool, where: tuple[str, ...],
             output: Output) -> None:
    """Search by a text description such as "glass breaking" (indexes built with a text-audio encoder: clap)."""
    from retrieval.index import Index

    with Index.open(index) as idx:
        hits = idx.search_text(description, k, windows=windows, where=list(where))
    _render_hits(hits, output)


@cli.command("zeroshot")
@index_option
@click.option("--labels", "labels", help="Comma-separated class names, e.g. dog,rain,siren.")
@click.option("--label-column", default="label", show_default=True,
              help="Metadata column with the true labels (class names come from it when --labels is omitted).")
@click.option("--template", "templates", multiple=True,
              help="Prompt template with {label}; repeat to ensemble. Default: four CLAP-style prompts.")
@click.option("--eval", "evaluate", is_flag=True, help="Report zero-shot accuracy and mAP against --label-column.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write every file's prediction to a CSV.")
@output_options
@progress_option
def zeroshot_cmd(index: str | None, labels: str | None, label_column: str, templates: tuple[str, ...],
                 evaluate: bool, out: Path | None, output: Output) -> None:
    """Zero-shot classification of every indexed file from class names alone (text-audio encoders)."""
    from retrieval.index import Index

    names = [x.strip() for x in labels.split(",") if x.strip()] if labels else None
    with Index.open(index) as idx:
        preds, metrics = idx.zero_shot(names, label_column=label_column, templates=list(templates) or None,
                                       evaluate=evaluate)
    if out:
        from retrieval.safecsv import write_csv

        write_csv(preds, out)
    records = preds[["path", "predicted", "probability", label_column]].to_dict(orient="records")
    if output != "table":
        emit(output, records, document={"metrics": metrics, "predictions": None if out else records})
        return
    shown = preds.head(20)
    emit(output, records[:len(shown)], formats={"probability": rounded(3)})
    if len(preds) > len(shown):
        click.echo(f"... {len(preds) - len(shown)} more" + (f" in {out}" if out else " (use --out FILE.csv)"))
    if metrics:
        click.echo(f"zero-shot accuracy {metrics['accuracy']:.4f}, mAP {metrics['map']:.4f} "
                   f"over {int(metrics['n'])} files and {int(metrics['classes'])} classes")


def _parse_ks(text: str) -> list[int]:
    try:
        ks = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}", param_hint="-k") from None
    if not ks or min(ks) < 1:
        raise click.BadParameter(f"k values must be positive, got {text!r}", param_hint="-k")
    return ks


@cli.command("classify")
@click.argument("clips", type=click.Path(exists=True, path_type=Path))
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="Neighbours that vote.")
@index_option
@click.option("--label-column", default="label", show_default=True, help="Metadata column whose labels transfer.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="CSV of predictions (default for a folder: predictions.csv).")
@click.option("--include-self", is_flag=True,
              help="Let a clip that is in the index vote for itself. Default: every indexed file with the "
                   "clip's content (same bytes, any path) is left out of its vote, as in `retrieve eval`.")
@where_option
@output_options
@progress_option
def classify_cmd(clips: Path, k: int, index: str | None, label_column: str, out: Path | None, include_self: bool,
                 where: tuple[str, ...], output: Output) -> None:
    """kNN label transfer: label CLIPS (a file or a folder) by a similarity-weighted vote of neighbours."""
    from retrieval.index import Index

    with Index.open(index) as idx:
        preds = idx.classify(clips, k, label_column=label_column, where=list(where), include_self=include_self)
    in_index = int((preds.excluded_self.fillna(0) > 0).sum())
    self_note = (f"{in_index} of {len(preds)} clip(s) are in the index: each one's own file (same content) was "
                 "left out of its vote; --include-self counts it" if in_index else
                 "--include-self: clips in the index voted for themselves" if include_self else None)
    if clips.is_dir() or out:
        out = out or Path("predictions.csv")
        flat = preds.assign(votes=preds.votes.map(json.dumps), scores=preds.scores.map(json.dumps),
                            neighbours=preds.neighbours.map(lambda n: json.dumps(n, default=str)))
        from retrieval.safecsv import write_csv

        write_csv(flat, out)
    if output != "table":
        emit(output, preds.to_dict(orient="records"))
        return
    if clips.is_dir():
        ok = preds.error.isna()
        click.echo(f"wrote {len(preds)} predictions to {out} ({(~ok).sum()} clips unreadable)")
        click.echo(preds[ok].predicted.value_counts().to_string())
        if self_note:
            click.echo(self_note)
        return
    row = preds.iloc[0].to_dict()
    if row["error"]:
        raise click.ClickException(row["error"])
    click.echo(f"{row['clip']}: {row['predicted']} (confidence {row['confidence']:.3f})")
    _table(["label", "vote", "share"],
           [[lab, f"{v:.3f}", f"{row['scores'][lab]:.3f}"] for lab, v in row["votes"].items()])
    click.echo("neighbours:")
    _table(["path", "similarity", label_column], [[p, f"{sim:.4f}", str(lab)] for p, sim, lab in row["neighbours"]])
    if self_note:
        click.echo(self_note)


@cli.command("eval")
@index_option
@click.option("--label-column", required=True, help="Metadata column with the labels (a;b = multi-label).")
@click.option("--group-column", help="Neighbours from the same group (speaker, recording, site) never count.")
@click.option("-k", "ks", default="1,5,10", show_default=True, help="Comma-separated k values.")
@click.option("--level", type=LevelChoice(LEVELS), default="file", show_default=True,
              help="Score whole files (each by its file vector) or every window as its own item.")
@click.option("--probe", is_flag=True, help="Also report a linear probe with group-aware cross-validation.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write report.md with plots (per-class bars, confusion matrix, 2-D map, PR curve) here.")
@click.option("--few-shot", "few_shot", metavar="N,N,...",
              help="Instead: few-shot learning curves with N labelled examples per class (e.g. 1,2,4,8,16,32): "
                   "trained head vs class prototypes vs kNN, macro ROC-AUC, cmAP and top-1 with 95% CIs.")
@click.option("--draws", type=click.IntRange(min=1), default=5, show_default=True,
              help="Random support draws per fold for --few-shot (folds: one per group with --group-column).")
@where_option
@output_options
@progress_option
def eval_cmd(index: str | None, label_column: str, group_column: str | None, ks: str, level: str, probe: bool,
             report_dir: Path | None, few_shot: str | None, draws: int, where: tuple[str, ...],
             output: Output) -> None:
    """Leave-one-out nearest-neighbour quality: kNN accuracy, precision/recall@k, mAP, chance level.
    Beside each metric: how many queries it averages, and how many were left out and why.
    With --few-shot: how a head trained on a few labels per class compares with prototypes and kNN."""
    from retrieval.index import Index

    if few_shot:
        with Index.open(index) as idx:
            fs = idx.few_shot(label_column, group_column, _parse_ks(few_shot), draws=draws, level=level,  # type: ignore[arg-type]
                              where=list(where))
        rows = fs.table.to_dict(orient="records")
        if output != "table":
            emit(output, rows, document={"curve": rows, "differences": fs.diffs.to_dict(orient="records"),
                                         "verdict": fs.verdict(), "settings": fs.settings})
            return
        emit(output, rows, formats={c: rounded(4) for c in ("mean", "ci_low", "ci_high")})
        click.echo(fs.verdict())
        return
    with Index.open(index) as idx:
        result = idx.evaluate(label_column, group_column, _parse_ks(ks), level=level, probe=probe,  # type: ignore[arg-type]
                              where=list(where), report_dir=report_dir)
    cov = result.coverage
    notes = list(dict.fromkeys(w for w in cov["why"] if w))

    def _covered(metric: str) -> dict[str, Any]:
        if metric not in cov.index:
            return {"over": None, "left_out": None, "why": None}
        r = cov.loc[metric]
        return {"over": f"{r.averaged_over} {r.unit}", "left_out": int(r.excluded), "why": r.why or None}

    rows = [{"metric": k, "value": v, **_covered(k)} for k, v in result.metrics.items()]
    if output != "table":
        coverage = {m: r for m, r in cov.to_dict(orient="index").items()}
        emit(output, rows, document={**result.metrics, "coverage": coverage})
        return
    shown = [{**r, "left out": "" if r["left_out"] is None else
              f"{r['left_out']}" + (f" [{notes.index(r['why']) + 1}]" if r["why"] else "")} for r in rows]
    emit(output, shown, columns=["metric", "value", "over", "left out"],
         formats={"value": lambda v: f"{v:.4f}" if isinstance(v, float) else str(v), "over": lambda o: o or ""})
    for i, note in enumerate(notes, 1):
        click.echo(f"[{i}] {note}")
    if len(result.confusions):
        click.echo("most confused (true -> predicted):")
        top = result.confusions.head(5)
        _table(["true", "predicted", "count", "rate"],
               [[str(r.true), str(r.predicted), str(r["count"]), f"{r.rate:.3f}"] for _, r in top.iterrows()])
    if report_dir:
        click.echo(f"report: {report_dir / 'report.md'}")


@cli.command("compare")
@click.option("--index", "indexes", multiple=True, required=True, metavar="PATH|NAME",
              help="An index to compare; repeat (built from the same corpus).")
@click.option("--label-column", required=True, help="Metadata column with the labels.")
@click.option("--group-column", help="Exclude same-group neighbours, and resample whole groups in the bootstrap.")
@click.option("-k", "ks", default="1,5,10", show_default=True, help="Comma-separated k values.")
@click.option("--metric", default="knn_accuracy@1", show_default=True, help="Metric that names the winner.")
@click.option("--level", type=LevelChoice(LEVELS), default="file", show_default=True,
              help="Score whole files (each by its file vector) or every window as its own item.")
@click.option("--resamples", type=click.IntRange(min=100), default=1000, show_default=True,
              help="Bootstrap resamples behind the confidence interval and p-value of the winner's margin.")
@output_options
def compare_cmd(indexes: tuple[str, ...], label_column: str, group_column: str | None, ks: str, metric: str,
                level: str, resamples: int, output: Output) -> None:
    """Side by side: which encoder, pooling or post-processing gives the best neighbours on this data?"""
    from retrieval.compare import compare
    from retrieval.index import Index

    results = {}
    for name in indexes:
        with Index.open(name) as idx:
            r = idx.recipe
            label = f"{Path(name).name} ({r.encoder}/{r.pooling}/{r.postprocess})"
            results[label] = idx.evaluate(label_column, group_column, _parse_ks(ks), level=level)  # type: ignore[arg-type]
    first = next(iter(results.values()))
    groups = first.predictions["group"].tolist() if group_column else None
    cmp = compare(results, metric, groups=groups, n_resamples=resamples)
    by_index = cmp.table.to_dict(orient="index")
    rows = [{"index": name, **row} for name, row in by_index.items()]
    if output != "table":
        emit(output, rows, document={
            "table": by_index, "winner": cmp.winner, "runner_up": cmp.runner_up,
            "metric": cmp.metric, "margin": cmp.margin, "ci": [cmp.ci_low, cmp.ci_high], "p_value": cmp.p_value})
        return
    shown = [c for c in cmp.table.columns if "@" in c or c in ("map", "chance_accuracy")]
    emit(output, rows, ["index"] + shown, formats=dict.fromkeys(shown, rounded(4)))
    click.echo(cmp.summary())


@cli.command("tag")
@index_option
@click.option("--model", required=True, help="A fine-tuned BEATs checkpoint (.pt), e.g. ..._finetuned_on_AS2M_cpt2.pt.")
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True, help="Classes kept per file.")
@click.option("--column", default="audioset_tags", show_default=True, help="Metadata column for the tags.")
@click.option("--ontology", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="AudioSet class_labels_indices.csv, to store class names instead of AudioSet ids.")
@click.option("--device", default="cpu", show_default=True, help="torch device for the tagging model.")
@json_option
@progress_option
def tag_cmd(index: str | None, model: str, top: int, column: str, ontology: Path | None, device: str,
            as_json: bool) -> None:
    """Store each file's top AudioSet tags (fine-tuned BEATs) as metadata, for --where and eval."""
    from retrieval.index_paths import find_index
    from retrieval.store import Store
    from retrieval.tags import tag_files

    with Store.open(find_index(index), writable=True) as store:
        n = tag_files(store, model, top=top, column=column, ontology=ontology, device=device,
                      on_warning=lambda line: click.echo(f"warning: {line}", err=True))
    if as_json:
        click.echo(json.dumps({"tagged": n, "column": column, "score_column": f"{column}_score"}))
        return
    click.echo(f"tagged {n} files (column {column!r}; filter with --where \"{column} LIKE '%...%'\")")


def _render_hits(hits: Any, output: Output) -> None:
    """A DataFrame of hits as rows (see :func:`_render_rows`)."""
    _render_rows(hits.to_dict(orient="records"), hits.attrs.get("warnings") or [], output)


def _render_rows(records: list[dict[str, Any]], warnings: list[str], output: Output) -> None:
    """Hits as rows; a query warning (a silent clip) goes to stderr and into every machine-readable row."""
    for line in warnings:
        click.echo(f"warning: {line}", err=True)
    if output == "table":
        columns = list(dict.fromkeys(c for r in records for c in r))
        extra = [c for c in columns if c not in _TABLE_SKIP and any(clean(r.get(c)) is not None for r in records)]
        rows = [{**r, "time": f"{r['start_s']:.2f}-{r['end_s']:.2f}s"} for r in records]
        emit(output, rows, ["rank", "score", "path", "time"] + extra, formats={"score": rounded(4)})
    else:
        emit(output, [{**r, "query_warning": "; ".join(warnings)} for r in records] if warnings else records)


# -- info / export / models ----------------------------------------------------------------


def _fit_line(mode: str, fit: dict | None) -> str:
    if fit is None:
        return f"{mode}, fit size not recorded (the next changing `retrieve index` refits)"
    return (f"{mode}, fitted on {fit['fitted_on']} windows; {fit['added_since']} added, {fit['removed_since']} "
            f"removed since ({fit['change_share']:.1%}; refit above {fit['refit_above']:.0%})")


@cli.command("info")
@index_option
@click.option("--verify", is_flag=True,
              help="Read every FAISS file and check its checksum (damaged files are rebuilt from DuckDB). "
                   "Without it, info comes from the summary the last writer left while no file of the index "
                   "has changed since, and FAISS files are judged by their sidecars.")
@json_option
def info_cmd(index: str | None, verify: bool, as_json: bool) -> None:
    """Counts, recipe and health of an index (FAISS is rebuilt from DuckDB if stale)."""
    from retrieval.index_paths import find_index
    from retrieval.store.summary import read_fresh

    root = find_index(index)
    info = None if verify else read_fresh(root)
    if info is None:
        from retrieval.store import Store

        info = Store.read_info(root, verify=verify)
    if as_json:
        from retrieval.legacy import INFO_KEYS, with_legacy_keys

        click.echo(json.dumps(with_legacy_keys(info, INFO_KEYS), default=str))
        return
    recipe = info.get("recipe") or {}
    lines = [
        ("index", info["path"]), ("corpus", "; ".join(info.get("corpus_roots") or [str(info["corpus_root"])])),
        ("files", f"{info['files']} ({info['files_silent']} silent, {info['audio_hours']:.2f} h of audio)"),
        ("vectors", f"{info['windows']} windows, {info['file_vectors']} files"),
        ("errors", f"{info['errors']} errors, {info['warnings']} warnings"
                   + (" (list them: retrieve errors)" if info["errors"] or info["warnings"] else "")),
    ]
    if recipe:
        lines += [
            ("encoder", f"{recipe['encoder']} {recipe['encoder_options'].get('model') or ''}".rstrip()),
            ("recipe", f"{recipe['sample_rate']} Hz, window {recipe['window_samples'] / recipe['sample_rate']:g} s, "
                       f"hop {recipe['hop_samples'] / recipe['sample_rate']:g} s, pooling {recipe['pooling']}, "
                       f"postprocess {recipe['postprocess']}, {recipe['precision']}"),
            ("dim", f"{info['dim']} stored, {info['search_dim']} searched"),
            ("recipe hash", info["recipe_hash"]),
            ("faiss ntotal", f"{info['faiss_ntotal_window']} windows, {info['faiss_ntotal_file']} files"),
            ("faiss index", f"{info.get('index_type')} (requested {info.get('index_type_requested')}; "
                            f"{info.get('index_type_reason')}), recall@10 {info.get('recall_at_10')}"
                            + (f" ({info['recall_note']})" if info.get("recall_note") else "")),
            ("postprocess fit", _fit_line(recipe["postprocess"], info.get("postprocess_fit"))),
            ("consistent", str(info["consistent"]).lower()
             + (f" (rebuilt on open: {', '.join(info['repaired_on_open'])})" if info["repaired_on_open"] else "")),
        ]
    lines.append(("metadata", ", ".join(info["metadata_columns"])))
    if info.get("reading", "live") != "live":  # a writer holds the index: this is its last published state
        lines.append(("reading", f"snapshot {info['snapshot']['id']} published {info['snapshot']['published_at']}, "
                                 f"{info['reading'].removeprefix('snapshot: ')}"))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        click.echo(f"{key.ljust(width)}  {value}")


@cli.command("errors")
@index_option
@click.option("--severity", type=click.Choice(SEVERITIES),
              help="Only files that failed (error: not in the index) or went in with a caveat (warning). "
                   "Default: both.")
@output_options
def errors_cmd(index: str | None, severity: str | None, output: Output) -> None:
    """Files that failed or were warned about while indexing: path, severity, stage, reason and when."""
    from retrieval.index import Index

    with Index.open(index) as idx:
        found = idx.errors(severity)  # type: ignore[arg-type]
    rows = [{"path": r["path"], "severity": r["severity"], "stage": r["stage"], "reason": r["reason"],
             "when": None if r["recorded_at"] is None else str(r["recorded_at"])[:19]}
            for r in found.to_dict(orient="records")]
    emit(output, rows, empty=f"no {severity or 'error or warning'}s recorded")


@cli.command("export")
@index_option
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--vectors", type=click.Choice(VECTOR_KINDS), default="searched", show_default=True,
              help="searched: what the index searches, post-processed as its recipe says (center/whiten, "
                   "fitted on this corpus) and L2-normalised, so a dot product is the query score. raw: the "
                   "pooled encoder output as stored, before post-processing and normalisation.")
@click.option("--level", type=LevelChoice(EXPORT_LEVELS), default="both", show_default=True,
              help="file: one vector per file; window: one per analysis window (start_s/end_s); both: both, "
                   "told apart by the 'level' column.")
@json_option
def export_cmd(index: str | None, out: Path, vectors: str, level: str, as_json: bool) -> None:
    """Write vectors to OUT (Parquet): path, level, start_s, end_s, labels, embedding. OUT's folder must
    exist (it is not created); the file's schema metadata says which vectors it holds."""
    from retrieval.index import Index

    with Index.open(index) as idx:
        summary = idx.export(out, vectors=vectors, level=level)
    if as_json:
        click.echo(json.dumps(summary.to_dict()))
        return
    click.echo(summary.describe())
    if summary.note:
        click.echo(f"note: {summary.note}")


@cli.command("models")
@json_option
def models_cmd(as_json: bool) -> None:
    """List every encoder, its default checkpoint, and whether it is available here."""
    from retrieval.encoders.weights import local_status
    from retrieval.encoders.registry import entry, names

    rows = []
    for name in names():
        e = entry(name)
        ok, where = local_status(e)
        rows.append({"encoder": name, "default_model": e.default_model, "text": e.has_text,
                     "available": ok, "where": where, "summary": e.summary})
    if as_json:
        click.echo(json.dumps(rows))
        return
    _table(["encoder", "default checkpoint", "text", "available", "where"],
           [[r["encoder"], r["default_model"] or "(none)", "yes" if r["text"] else "no",
             "yes" if r["available"] else "no", r["where"]] for r in rows])


# -- locate --------------------------------------------------------------------------------


@cli.command("locate")
@click.argument("paths", nargs=-1, required=True, metavar="[CLIP] LONG_FILE",
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--text", help="Locate a text description instead of a clip (needs a text-audio encoder: clap).")
@click.option("--target", help="Locate a trained target instead of a clip: every window of LONG_FILE scored by "
                               "the head of `retrieve train --target T` (needs --index; threshold 0.5 by default).")
@click.option("--index", "index", metavar="PATH|NAME",
              help="Use this index's encoder and recipe (window, hop, pooling, post-processing). LONG_FILE "
                   "need not be in it. Default: no index; --encoder.")
@click.option("--encoder", type=click.Choice(_encoder_names()), help="Encoder family without --index [logmel].")
@click.option("--model", help="Checkpoint without --index: hub id or local path.")
@click.option("--opt", "opts", multiple=True, metavar="KEY=VALUE", help="Encoder-specific setting without --index.")
@click.option("--pooling", type=click.Choice(POOLING_MODES),
              help="Frames -> window vector without --index (default: the encoder's).")
@click.option("--window-s", type=float, help="Analysis window in seconds (default: the clip's length, or the index's).")
@click.option("--hop-s", type=float, help="Hop in seconds (default: 1/8 of the window, or the index's).")
@click.option("--threshold", type=float,
              help="Fixed score threshold (default: adaptive, the middle of the largest drop among the curve's "
                   "tallest peaks).")
@click.option("--max-gap-s", type=float, help="Join events separated by less than this (default: half the window).")
@click.option("--min-dur-s", type=float, help="Drop events shorter than this (default 0).")
@click.option("--near-peak", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
              help="An event spans the windows scoring within 1-X of its peak height; 1 = its best window, "
                   "0.9 = all of a steady sound longer than the clip.")
@click.option("--no-standardize", is_flag=True,
              help="Score raw cosines instead of standardising each dimension over LONG_FILE first.")
@click.option("--start-s", type=float, help="Use the query clip from this time (seconds).")
@click.option("--end-s", type=float, help="Use the query clip up to this time (seconds).")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a PNG of the similarity over time with the events shaded and the threshold line.")
@click.option("--device", default="cpu", show_default=True, help="torch device for model encoders.")
@click.option("--match", "match", type=click.Choice(MATCH_MODES), default="similar", show_default=True,
              help="similar: windows that sound like CLIP (any take of the same word, any bark). copy: CLIP "
                   "itself, re-encoded, resampled, trimmed, louder or in noise, never a look-alike; events carry "
                   "offset_s and confidence; --threshold is then a confidence (aligned correlation times band-level "
                   "agreement) [0.33]. similar stays the default "
                   "because copy answers a narrower question: on docs/bench_copies.md it finds copies that "
                   "similar misses, and finds no other take.")
@output_options
@progress_option
def locate_cmd(paths: tuple[Path, ...], text: str | None, target: str | None, index: str | None, encoder: str | None, model: str | None,
               opts: tuple[str, ...], pooling: str | None, window_s: float | None, hop_s: float | None,
               threshold: float | None, max_gap_s: float | None, min_dur_s: float | None, near_peak: float,
               no_standardize: bool,
               start_s: float | None, end_s: float | None, plot: Path | None, device: str, match: str,
               output: Output) -> None:
    """Find where CLIP (or --text) occurs in LONG_FILE: events with start, end and scores, from the similarity
    of every window of LONG_FILE (streamed) to the query."""
    if len(paths) != (1 if text is not None or target else 2):
        raise click.UsageError("give CLIP LONG_FILE, or --text TEXT LONG_FILE, or --target T LONG_FILE")
    clip, long_file = (None, paths[0]) if text is not None or target else paths
    if target:
        if index is None or text is not None or match == "copy":
            raise click.UsageError("--target needs --index (the index that holds the head), no --text and no "
                                   "--match copy")
        from retrieval.index import Index
        from retrieval.locate.target import HEAD_THRESHOLD, WHOLE_RUN, locate_target

        with Index.open(index, device=device) as idx:
            events = locate_target(idx, target, long_file, window_s=window_s, hop_s=hop_s,
                                   threshold=HEAD_THRESHOLD if threshold is None else threshold,
                                   max_gap_s=max_gap_s, min_dur_s=min_dur_s,
                                   near_peak=WHOLE_RUN if near_peak == 1.0 else near_peak, plot=plot).events
        _render_events(events, f"target:{target}", long_file, plot, match, output)
        return
    from retrieval.locate.options import LocateOptions

    how = LocateOptions(text=text, start_s=start_s, end_s=end_s, window_s=window_s, hop_s=hop_s,
                        standardize=not no_standardize, threshold=threshold, max_gap_s=max_gap_s,
                        min_dur_s=min_dur_s, near_peak=near_peak, plot=plot)
    if match == "copy":
        events = _locate_copy(clip, long_file, text, start_s, end_s, threshold, plot)
    elif index is not None:
        if encoder or model or opts or pooling:
            raise click.UsageError("--encoder, --model, --opt and --pooling come from the index's recipe with --index")
        from retrieval.index import Index

        with Index.open(index, device=device) as idx:
            events = idx.locate(clip, long_file, how)
    else:
        from retrieval.locate import locate

        events = locate(clip, long_file, how, encoder=encoder or "logmel", model=model,
                        encoder_options=_parse_opts(opts), device=device, pooling=pooling)
    _render_events(events, text if text is not None else str(clip), long_file, plot, match, output)


def _render_events(events: Any, query: str, long_file: Path, plot: Path | None, match: str, output: Output) -> None:
    a = events.attrs
    for line in a.get("warnings", []):
        click.echo(f"warning: {line}", err=True)
    records = events.to_dict(orient="records")
    if output != "table":
        emit(output, records, document={
            "query": query, "long_file": str(long_file), "match": match,
            **{k: a[k] for k in ("threshold", "background", "threshold_rule", "window_s", "hop_s", "duration_s",
                                 "encoder", "pooling")},
            "plot": None if plot is None else str(plot), "warnings": a.get("warnings", []), "events": records})
        return
    click.echo(f"{len(events)} event(s) in {long_file} ({a['duration_s']:.1f} s); threshold {a['threshold']:.4f}, "
               f"background {a['background']:.4f}; window {a['window_s']:.3f} s, hop {a['hop_s']:.3f} s")
    if len(events):
        seconds, score = rounded(3), rounded(4)
        emit(output, [{"#": i + 1, **r} for i, r in enumerate(records)],
             ["#", "start_s", "end_s", "offset_s", "confidence", "gain_db"] if match == "copy"
             else ["#", "start_s", "end_s", "peak_s", "peak_score", "mean_score"],
             formats={"start_s": seconds, "end_s": seconds, "peak_s": seconds, "peak_score": score,
                      "mean_score": score, "offset_s": seconds, "confidence": score, "gain_db": rounded(1)})
    if plot is not None:
        click.echo(f"wrote {plot}")


def _locate_copy(clip: Path | None, long_file: Path, text: str | None, start_s: float | None, end_s: float | None,
                 threshold: float | None, plot: Path | None) -> Any:
    if text is not None or clip is None:
        raise click.UsageError("--match copy needs a CLIP (a text has no recording to copy)")
    if plot is not None:
        raise click.UsageError("--plot draws the similarity curve of --match similar; --match copy has none")
    from retrieval.copies.locate import locate_copies

    return locate_copies(clip, long_file, start_s=start_s, end_s=end_s, threshold=threshold)


# -- duplicates ----------------------------------------------------------------------------


@cli.command("duplicates")
@index_option
@click.option("--min-overlap-s", type=click.FloatRange(min=0), default=0.1, show_default=True,
              help="Least duration of loud audio two files must share to count as the same recording.")
@output_options
def duplicates_cmd(index: str | None, min_overlap_s: float, output: Output) -> None:
    """Groups of files holding the same recording (re-encodes, trims, gain, resampling), never other takes.

    Needs copy frames (`retrieve index --copies`). Deletes nothing: the pairs are stored, and
    every file but a group's first gets duplicate_of (its path), for --where and the page.
    """
    from retrieval.copies.duplicates import find_duplicates
    from retrieval.index import Index

    with Index.open(index, writable=True) as idx:
        report = find_duplicates(idx.store, min_overlap_s=min_overlap_s)
    rows = [{"group": g["group_id"], "first": g["first"], "a": p["a"], "b": p["b"],
             "kind": "whole" if p["whole"] else "part",
             "a_start_s": p["a_start_s"], "a_end_s": p["a_end_s"], "b_start_s": p["b_start_s"],
             "b_end_s": p["b_end_s"], "confidence": p["confidence"], "group_confidence": g["confidence"],
             "gain_db": p["gain_db"], "offset_s": p["offset_s"], "duration_ratio": p["duration_ratio"]}
            for g in report.groups for p in g["pairs"]]
    if output == "json":
        click.echo(json.dumps({"files": report.files, "candidates": report.candidates,
                               "groups": report.groups}, default=str))
        return
    if output == "table":
        click.echo(f"{len(report.groups)} group(s) among {report.files} files ({report.candidates} pairs checked)")
        for g in report.groups:
            click.echo(f"group {g['group_id']}: {len(g['files'])} files, confidence {g['confidence']:.3f}")
            for p in g["pairs"]:
                where = ("the same recording" if p["whole"] else
                         f"contains {p['b']} at {p['a_start_s']:.2f}-{p['a_end_s']:.2f} s")
                click.echo(f"  {p['a']} ~ {p['b']}: {where}; confidence {p['confidence']:.3f}, "
                           f"gain {p['gain_db']:+.1f} dB, offset {p['offset_s']:+.3f} s, "
                           f"duration ratio {p['duration_ratio']:.3f}")
        return
    emit(output, rows)


# -- serve ---------------------------------------------------------------------------------


@cli.command("serve")
@click.option("--index", "indexes", multiple=True, metavar="PATH|NAME",
              help="Index to serve; repeat for several (the page picks one). Default: the only one under indexes/.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback needs --token.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True,
              help="TCP port to listen on.")
@click.option("--token", envvar="RETRIEVE_TOKEN", show_envvar=True,
              help="Secret every request must carry (Authorization: Bearer, or the page opened once as /?token=).")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a browser.")
@click.option("--max-upload-mb", type=click.FloatRange(min=0, min_open=True), default=50.0, show_default=True,
              help="Largest accepted upload.")
@click.option("--max-upload-s", type=click.FloatRange(min=0, min_open=True), default=600.0, show_default=True,
              help="Longest accepted upload, in decoded seconds.")
@click.option("--device", default="cpu", show_default=True, help="torch device for model encoders.")
@click.option("--heavy-slots", type=click.IntRange(min=0), default=None,
              help="Uploads, locates and thumbnail renders worked on at once; searches by an indexed file "
                   "and audio slices never wait for them. Default: half the CPU cores, at least 1; 0: no limit.")
@click.option("--heavy-processes", type=click.IntRange(min=0), default=None,
              help="Worker processes that decode and embed uploads and render thumbnails, so the server's "
                   "own process stays free for searches. Default: one per heavy slot; 0: in the server process.")
def serve_cmd(indexes: tuple[str, ...], host: str, port: int, token: str | None, open_browser: bool,
              max_upload_mb: float, max_upload_s: float, device: str, heavy_slots: int | None,
              heavy_processes: int | None) -> None:
    """A local web page to search and listen to results, and a JSON API (docs at /docs). Needs the serve extra."""
    from retrieval.serve import serve

    serve(list(indexes), host=host, port=port, token=token or None, max_upload_mb=max_upload_mb,
          max_upload_s=max_upload_s, device=device, open_browser=open_browser, heavy_slots=heavy_slots,
          heavy_processes=heavy_processes, echo=click.echo)


from retrieval.cli_adapt import COMMANDS as _ADAPT_COMMANDS  # noqa: E402  (label, labels, train, score, suggest)

for _command in _ADAPT_COMMANDS:
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="retrieve")


if __name__ == "__main__":
    main()
