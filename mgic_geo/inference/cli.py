"""``mgic-geo predict``: stream point clouds through a classifier into a CSV of predictions.

Clouds go through the network in batches, lazily (:func:`~mgic_geo.inference.predict_clouds`):
nothing but the current batch (and one row of the CSV) is held, so memory stays flat however many
clouds pass. ``--check-equal M`` re-runs the first M clouds one by one and compares their logits;
``--check-memory`` samples the RSS (:class:`~mgic_geo.inference.monitor.MemoryMonitor`).

Command line (``--model`` is an untrained network, for load tests without a checkpoint)::

    mgic-geo predict --ckpt outputs/modelnet10/mgic_diffgcn/checkpoints/last.ckpt \\
        --inputs 'datasets/modelnet10/*/test/*.off' --out predictions.csv
    mgic-geo predict --model mgic_diffgcn --synthetic 1000 --check-memory --check-equal 64
    mgic-geo predict --ckpt last.ckpt --inputs 'datasets/modelnet10/*/test/*.off' --render 8 --render-out clouds.png

Bad input files: without ``--skip-bad`` the run stops at the first file that cannot be read (or has
fewer points than the model's k + 1); the clouds before it are still predicted, and their rows are
kept in ``<out stem>.partial.csv`` beside ``--out`` (``--out`` itself is written only by a complete
run), as the error says; exit status 2. ``--skip-bad`` skips such files and goes on: each is reported
on stderr as it is skipped and listed with its reason in ``<out stem>.skipped.csv`` (columns ``file,reason``),
and the exit status is 3. Exit status: 0 when every input was predicted (and ``--check-equal`` found
equal logits), 1 when ``--check-equal`` found a difference, 2 for an error, 3 when files were skipped.
A complete run removes a ``.partial.csv`` or ``.skipped.csv`` of an earlier run with the same ``--out``.

``--render N`` draws the first N clouds (matplotlib, no display needed) titled ``pred: <class>`` and,
where the true class is known, ``true: <class>`` in green (right) or red (wrong): for files in ModelNet's
layout ``<class>/<split>/<file>`` whose class folder is a class name, and for ``--synthetic`` clouds
of a 10-class model (cloud i is a shape of ``CLASSES[i % 10]``).

The long load check (opt-in, not part of the test suite; it prints its own clouds/s): 100,000
clouds at 1,024 points take hours on a small CPU, so the check runs at 128 points::

    mgic-geo predict --model mgic_diffgcn --synthetic 100000 --num-points 128 --batch-size 64 \\
        --threads 1 --check-memory --check-equal 64 --out /tmp/p.csv
"""
from __future__ import annotations

import argparse
import collections
import csv
import glob
import json
import os
import sys
import time
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor, nn

from mgic_geo.data.clouds import read_cloud, synthetic_clouds, true_class
from mgic_geo.data.layout import CLASSES, MESH_EXTENSIONS, POINT_EXTENSIONS
from mgic_geo.inference.checkpoint import load_classifier
from mgic_geo.inference.monitor import MemoryMonitor
from mgic_geo.inference.render import MAX_RENDER, picture_path, render_clouds
from mgic_geo.inference.stream import (class_names, fixed_points, min_points, one_by_one, predict_clouds,
                                       set_batchnorm_statistics)
from mgic_geo.validation import check_int

DEVICES = ("auto", "cpu", "cuda")
# Batched and one-by-one logits differ only by float32 rounding (measured: below 1e-7 on the clouds
# of the tests); --check-equal fails above this, far above rounding and far below any real change.
EQUAL_ATOL = 1e-4
EQUAL_RTOL = 1e-4
# Clouds whose statistics the BatchNorms of an untrained --model take (set_batchnorm_statistics).
CALIBRATION_CLOUDS = 32
# The exit status of a run that skipped bad input files (--skip-bad) but predicted all others.
EXIT_SKIPPED = 3


def side_files(out: str | Path) -> tuple[Path, Path]:
    """``(<out stem>.partial.csv, <out stem>.skipped.csv)`` beside ``out``: the rows predicted before a
    bad file stopped the run, and the files ``--skip-bad`` skipped."""
    out = Path(out)
    return out.with_name(f"{out.stem}.partial.csv"), out.with_name(f"{out.stem}.skipped.csv")


def input_files(inputs: str) -> list[Path]:
    """The files of ``--inputs``: every mesh or point-cloud file under a folder (recursively), or
    the files a glob pattern matches, sorted; ``ValueError`` naming ``inputs`` when there are none.
    Entries that are not folders count, whatever they are (a FIFO, a device, a broken link), so that
    reading reports them (:func:`~mgic_geo.data.errors.check_data_file`) instead of leaving them out silently."""
    extensions = MESH_EXTENSIONS + POINT_EXTENSIONS
    root = Path(inputs)
    if root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in extensions and not p.is_dir())
        if not files:
            raise ValueError(f"`--inputs` {inputs}: no mesh or point-cloud files ({' '.join(extensions)}) in this folder")
        return files
    files = sorted(Path(p) for p in glob.glob(inputs, recursive=True) if not Path(p).is_dir())
    if not files:
        what = "no such file or folder" if not glob.has_magic(inputs) else "the pattern matches no file"
        raise ValueError(f"`--inputs` {inputs}: {what}; expected a folder or a glob of mesh or point-cloud files "
                         f"({' '.join(extensions)})")
    return files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="a PointCloudClassifier checkpoint (mgic-geo fit's checkpoints/last.ckpt)")
    source.add_argument("--model", help="an untrained registry network (randomly initialised with --seed), for load tests")
    parser.add_argument("--model-kwargs", default="{}",
                        help='with --model: JSON keyword arguments of create_model, e.g. \'{"k": 4}\' (default: {})')
    parser.add_argument("--num-classes", type=int, default=10, help="with --model: classes (default: %(default)s)")
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--inputs", help="a folder (searched recursively) or a glob of .off meshes or point-cloud files "
                                         f"({' '.join(POINT_EXTENSIONS)})")
    inputs.add_argument("--synthetic", type=int, metavar="N", help="N generated ModelNet-10-like clouds instead")
    parser.add_argument("--num-points", type=int, default=None,
                        help="points per cloud, sampled or padded (default: the model's num_points, else 1024)")
    parser.add_argument("--batch-size", type=int, default=32, help="clouds per forward pass (default: %(default)s)")
    parser.add_argument("--out", default="outputs/predict/predictions.csv",
                        help="CSV of file, class, class_name, one row per cloud, streamed (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the sampling of the clouds (and --model's weights) (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available, else CPU), cpu or cuda")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads, e.g. 1 on a busy machine (default: torch's default)")
    parser.add_argument("--check-memory", action="store_true",
                        help="sample the process RSS every --memory-every batches; print start, max and growth")
    parser.add_argument("--memory-every", type=int, default=10, help="batches between RSS samples (default: %(default)s)")
    parser.add_argument("--check-equal", type=int, default=0, metavar="M",
                        help="re-run the first M clouds one by one and compare their logits (default: 0, off)")
    parser.add_argument("--render", type=int, default=0, metavar="N",
                        help=f"draw the first N clouds (at most {MAX_RENDER}) as 3-D scatter plots titled with their "
                             "predicted and, where known, true class (default: 0, off)")
    parser.add_argument("--render-out", default=None, metavar="PATH",
                        help="the picture of --render (default: --out with the suffix .png)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip input files that cannot be read (or have too few points), listing them with the "
                             "reason in <out stem>.skipped.csv, exit status 3; without it the run stops at the first "
                             "one, keeping the rows before it in <out stem>.partial.csv")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _resolve_device(device: str) -> torch.device:
    if device not in DEVICES:
        raise ValueError(f"`--device` must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("`--device cuda` was requested but CUDA is not available (torch.cuda.is_available() is False)")
    return torch.device("cuda" if device == "auto" and torch.cuda.is_available() else "cpu" if device == "auto" else device)


def _build_model(args: argparse.Namespace) -> tuple[nn.Module, str, int]:
    if args.ckpt is not None:
        try:
            classifier = load_classifier(args.ckpt)
        except ValueError as err:
            raise ValueError(f"`--ckpt` {err}") from None
        return classifier, f"{classifier.hparams.model} from {args.ckpt}", int(classifier.num_classes)
    from mgic_geo.models import create_model, list_models, model_task

    if args.model not in list_models():
        raise ValueError(f"`--model` {args.model!r} is not a registry model; available: {', '.join(list_models())}")
    if model_task(args.model) != "point_cloud_classification":
        fitting = [name for name in list_models() if model_task(name) == "point_cloud_classification"]
        raise ValueError(f"`--model` {args.model!r} is a network for {model_task(args.model).replace('_', ' ')}, "
                         f"not point clouds; choose one of: {', '.join(fitting)}")
    try:
        kwargs = json.loads(args.model_kwargs)
    except json.JSONDecodeError as err:
        raise ValueError(f"`--model-kwargs` must be a JSON object, got {args.model_kwargs!r} ({err})") from None
    if not isinstance(kwargs, dict):
        raise ValueError(f"`--model-kwargs` must be a JSON object, got {args.model_kwargs!r}")
    check_int("--num-classes", args.num_classes, minimum=2)
    torch.manual_seed(args.seed)
    model = create_model(args.model, num_classes=args.num_classes, **kwargs)
    description = (f"{args.model} (untrained: seed {args.seed}, BatchNorm statistics of {CALIBRATION_CLOUDS} "
                   "synthetic clouds)")
    return model, description, args.num_classes


def _open_csv(out: str):
    path = Path(out)
    if path.is_dir():
        raise ValueError(f"`--out` {out}: is a folder, expected a .csv file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # written under another name and renamed at the end, so a stopped run never leaves a
        # complete-looking file
        partial = path.with_name(f".{path.name}.partial")
        return path, partial, open(partial, "w", newline="")
    except OSError as err:
        raise ValueError(f"`--out` {out}: cannot be written ({err.strerror})") from None


def run(args: argparse.Namespace) -> int:
    check_int("--batch-size", args.batch_size)
    check_int("--seed", args.seed, minimum=0)
    check_int("--check-equal", args.check_equal, minimum=0)
    check_int("--memory-every", args.memory_every)
    check_int("--render", args.render, minimum=0)
    if args.render > MAX_RENDER:
        raise ValueError(f"`--render` draws at most {MAX_RENDER} clouds, got {args.render}")
    if args.synthetic is not None:
        check_int("--synthetic", args.synthetic)
    if args.num_points is not None:
        check_int("--num-points", args.num_points)
    if args.threads is not None:
        check_int("--threads", args.threads)
    default_threads = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(default_threads)


def _run(args: argparse.Namespace) -> int:
    device = _resolve_device(args.device)
    files = input_files(args.inputs) if args.inputs is not None else None  # a bad --inputs fails before the model loads
    picture = picture_path(args.render_out or Path(args.out).with_suffix(".png")) if args.render else None
    model, description, num_classes = _build_model(args)
    least = min_points(model)
    fixed = fixed_points(model)
    num_points = args.num_points if args.num_points is not None else fixed or 1024
    if num_points < least:
        raise ValueError(f"`--num-points` must be at least {least} for this model (its k={least - 1} neighbours plus "
                         f"the point itself), got {num_points}")
    if fixed is not None and num_points != fixed:
        raise ValueError(f"`--num-points` {num_points} differs from the model's num_points={fixed}; give {fixed}")
    if args.model is not None:
        # Clouds of their own (a third seed word), so the statistics never come from the clouds predicted.
        set_batchnorm_statistics(model, list(synthetic_clouds(CALIBRATION_CLOUDS, num_points, seed=args.seed, salt=(1,))))
    names_of_classes = class_names(num_classes)

    total = len(files) if files is not None else args.synthetic
    names: collections.deque[str] = collections.deque()  # the names of the clouds in flight: one batch at most
    # [cloud, name, true class or None, predicted class] of the first --render clouds only
    shown: list[list] = []
    skipped: list[tuple[str, str]] = []  # (file, reason) of the bad files --skip-bad skipped
    failure: list[ValueError] = []  # the bad file that stopped the run (without --skip-bad)

    def clouds() -> Iterator[Tensor]:
        if files is None:
            for index, cloud in enumerate(synthetic_clouds(total, num_points, seed=args.seed)):
                names.append(f"synthetic-{index:06d}")
                if index < args.render:  # synthetic cloud i is a shape of class CLASSES[i % 10]
                    shown.append([cloud, names[-1], index % len(CLASSES) if names_of_classes else None])
                yield cloud
        else:
            for index, file in enumerate(files):  # the index seeds the draw, skipped files or not
                try:
                    cloud = read_cloud(file, num_points, seed=args.seed, index=index, min_points=least)
                except ValueError as err:  # a bad file: the readers' messages start with its path
                    if not args.skip_bad:
                        failure.append(err)
                        return  # end the stream: the clouds before this file are still predicted and written
                    reason = str(err).removeprefix(f"{file}: ")
                    skipped.append((str(file), reason))
                    print(f"mgic-geo: skipped {file}: {reason}", file=sys.stderr)
                    continue
                names.append(str(file))
                if len(shown) < args.render:
                    shown.append([cloud, file.name, true_class(file, names_of_classes)])
                yield cloud

    from tqdm import tqdm

    out, partial, handle = _open_csv(args.out)
    monitor = MemoryMonitor(args.memory_every) if args.check_memory else None
    kept: list[tuple[Tensor, Tensor]] = []  # (cloud, batched logits) of the first --check-equal clouds only
    done = 0
    started = time.perf_counter()
    try:
        with handle, tqdm(total=total, desc="predict", unit="cloud", file=sys.stderr, mininterval=1.0,
                          disable=args.no_progress) as bar:
            writer = csv.writer(handle)
            writer.writerow(["file", "class", "class_name"])
            stream = clouds()
            if args.check_equal:
                stream = _keep_first(stream, args.check_equal, kept)
            for logits in predict_clouds(model, stream, batch_size=args.batch_size, device=device):
                label = int(logits.argmax())
                writer.writerow([names.popleft(), label, names_of_classes[label] if names_of_classes else ""])
                if done < args.check_equal:
                    kept[done] = (kept[done][0], logits)
                if done < args.render:
                    shown[done].append(label)
                done += 1
                if done % args.batch_size == 0 or done == total:
                    handle.flush()  # a long run's CSV grows on disk batch by batch
                    bar.update(done - bar.n)
                    if monitor is not None:
                        monitor.after_batch(-(-done // args.batch_size), done, last=done == total)
            if done != total and not failure:  # files were skipped: the last batch was not seen above
                handle.flush()
                bar.update(done - bar.n)
                if monitor is not None:
                    monitor.after_batch(-(-done // args.batch_size), done, last=True)
        kept_rows, skipped_list = side_files(out)
        if failure:
            if done:
                os.replace(partial, kept_rows)
                saved = f"the {done} row(s) predicted before it are kept in {kept_rows}"
            else:
                saved = "no cloud was predicted before it"
            raise ValueError(f"{failure[0]}\n  stopped at this file (input {done + 1} of {total}): {saved}; {out} was "
                             "not written (--skip-bad skips bad files and goes on)")
        for stale in (kept_rows, skipped_list):  # side files of an earlier run with this --out
            if stale.is_file():
                stale.unlink()
        if skipped:
            with open(skipped_list, "w", newline="") as side:
                csv.writer(side).writerows([("file", "reason"), *skipped])
            if not done:
                raise ValueError(f"none of the {total} input files could be read, so {out} was not written; each is "
                                 f"listed with the reason in {skipped_list} (the first: {skipped[0][0]}: {skipped[0][1]})")
        os.replace(partial, out)
        elapsed = time.perf_counter() - started
        threads = torch.get_num_threads()
        print(f"predicted {done} clouds with {description}: {num_points} points each, batches of {args.batch_size}, "
              f"{device.type}, {threads} thread{'s' * (threads != 1)}; {elapsed:.1f} s ({done / elapsed:.1f} clouds/s)")
        print(f"wrote {out} ({done} rows)")
        if monitor is not None:
            print(monitor.summary())
        if shown:
            render_clouds([c for c, *_ in shown], [p for *_, p in shown], class_names=names_of_classes,
                          true=[t for _, _, t, _ in shown], labels=[n for _, n, _, _ in shown], path=picture)
            right = sum(t == p for _, _, t, p in shown if t is not None)
            known = sum(t is not None for _, _, t, _ in shown)
            print(f"wrote {picture} ({len(shown)} clouds drawn; "
                  f"{f'{right} of {known} with a known class right' if known else 'true classes unknown'})")
        if skipped:
            print(f"skipped {len(skipped)} of {total} input files that could not be read, listed with the reason in "
                  f"{skipped_list} (exit status {EXIT_SKIPPED})")
        status = _check_equal(model, kept, args.batch_size, device) if args.check_equal else 0
        return status or (EXIT_SKIPPED if skipped else 0)
    finally:
        if partial.exists():
            partial.unlink()


def _keep_first(clouds: Iterator[Tensor], count: int, kept: list) -> Iterator[Tensor]:
    for index, cloud in enumerate(clouds):
        if index < count:
            kept.append((cloud, None))
        yield cloud


def _check_equal(model: nn.Module, kept: list[tuple[Tensor, Tensor]], batch_size: int, device: torch.device) -> int:
    batched = torch.stack([logits for _, logits in kept])
    alone = torch.stack(list(one_by_one(model, [cloud for cloud, _ in kept], device=device)))
    difference = float((batched - alone).abs().max())
    agree = int((batched.argmax(1) == alone.argmax(1)).sum())
    close = torch.allclose(batched, alone, atol=EQUAL_ATOL, rtol=EQUAL_RTOL)
    verdict = "equal" if close and agree == len(kept) else "DIFFERENT"
    # How far the clouds' logits lie from each other: a difference far below it is rounding, not a mix-up.
    spread = float((alone - alone.mean(0)).abs().max())
    print(f"check-equal: the first {len(kept)} clouds one by one vs in batches of {batch_size}: max |logit difference| "
          f"{difference:.3g} (tolerance atol {EQUAL_ATOL:g} + rtol {EQUAL_RTOL:g}; the clouds' logits lie up to "
          f"{spread:.3g} from their mean), argmax agree {agree}/{len(kept)}: {verdict}")
    if verdict != "equal":
        print(f"mgic-geo: error: --check-equal {len(kept)}: batched and one-by-one logits differ beyond rounding "
              f"(max {difference:.3g}, argmax agree {agree}/{len(kept)})", file=sys.stderr)
        return 1
    return 0
