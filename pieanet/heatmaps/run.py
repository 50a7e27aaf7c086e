"""make_heatmap's run, from its parsed options to its exit code: the inputs checked and listed, the model opened
(pieanet.runtime), the output folder locked (one run at a time), the run planned (planning.py), this process's share
of the photos processed (processing.py; under torchrun every world_size-th batch, rank 0 merging the parts), the
table printed and index.html written (report.py)."""

import argparse
import contextlib
import sys
from pathlib import Path

from pieanet import runtime
from pieanet.heatmaps import report
from pieanet.heatmaps.ledger import OutputLedger, ledger, tidy_ledger
from pieanet.heatmaps.outputs import occupied_prefixes, output_stems
from pieanet.heatmaps.planning import earlier_rows, plan_run, result_settings
from pieanet.heatmaps.processing import process
from pieanet.heatmaps.summary import (
    SUMMARY_NAME,
    SummaryError,
    SummaryLog,
    check_bookkeeping_files,
    leftover_parts,
    merge_parts,
    part_path,
    photo_keys,
    taken_stems,
    write_summary,
)
from pieanet.heatmaps.writing import remove
from pieanet.utils import cli, distributed, folders
from pieanet.utils.errors import EXIT_INTERRUPTED
from pieanet.utils.image_io import remove_orphan_temporaries
from pieanet.utils.safety import shown
from pieanet.utils.shipped import trust_statement

PROG = "make_heatmap"


def make_heatmaps(args: argparse.Namespace, default_input: Path) -> int:
    """The run of make_heatmap.py's parsed options ``args`` (argparse.Namespace: make_heatmap.parse_args); with no
    input named, the photos of ``default_input`` (the checkout's img_to_pred/). Returns the exit code (utils/errors.py);
    raises a UsageError (exit code 2) before any work for a bad input, output folder, checkpoint or device."""
    runtime.setup(args, torch_free_ok=True)
    sources = input_sources(args, default_input)
    bases = [source if source.is_dir() else source.parent for source in sources]
    for source, base in zip(sources, bases):
        if args.output.exists() and base.resolve() == args.output.resolve():
            raise cli.UsageError(
                f"{args.output}: the output folder is the input "
                + ("folder" if source.is_dir() else "photo's folder")
                + "; choose another --output"
            )
    cli.check_path_room(args.output)  # before anything reads or writes in it
    if not args.no_report:
        report.check_replaceable(args.output)  # a ReportError: exit 2; checked again before writing, under the lock
    errors: list[tuple] = []
    found = cli.check_inputs(sources, recursive=args.recursive, exclude=[args.output], errors=errors)
    paths, photo_bases, seen = [], [], set()
    for base, (_, listed) in zip(bases, found):
        for path in listed:  # a photo named by two inputs (a file and its folder) is done once
            if path.resolve() not in seen:
                seen.add(path.resolve())
                paths.append(path)
                photo_bases.append(base)
    base = bases[0]  # the report's fallback for rows of summaries older than the source column
    with contextlib.ExitStack() as held:
        with distributed.process_group(runtime.resolve_device(args.device, args)) as group:
            args.device = str(group.device)  # under torchrun with CUDA: this process's own GPU
            # the file that runs: the settings and the report name it
            args.checkpoint = runtime.model_file(args.checkpoint, args)
            model = runtime.open_model(args.checkpoint, args)
            settings = result_settings(args, args.checkpoint)
            cli.writable_folder(args.output)
            # one run per folder: rank 0 locks it for the whole run (report included); the ranks of this run share it
            with cli.refused_together(PROG, group):  # a busy folder: one line (rank 0), every rank exits 2
                held.enter_context(folders.locked(args.output, group))
            done = process_share(paths, photo_bases, model, args, settings, group, errors)
        if not group.is_main:
            return cli.EXIT_OK  # rank 0 reports for every process
        return finish_run(args, base, done)


def process_share(paths, bases, model, args, settings, group, folder_errors):
    """This process's share of the photos: whole batches, every world_size-th one, so each batch is the one a single
    process would run. Each process appends its rows to its own part (one process: to summary.csv itself); rank 0
    merges them. Returns, on rank 0, (every process's rows in the order of summary.csv, photos skipped by
    --resume, failed count, summary errors); None on the other ranks."""
    keys = [photo_keys(path, base, args.output) for path, base in zip(paths, bases)]  # base: the photo's input
    files, sources = [file for file, _ in keys], [source for _, source in keys]
    position = {source: index for index, source in enumerate(sources)}
    check_bookkeeping_files(args.output)  # summary, parts, ledger, lock: regular files or the run is refused
    earlier = earlier_rows(args.output, position)  # also checks summary.csv's columns before any work
    taken = ledger(args.output) | taken_stems(earlier[0] + earlier[2])
    proof = OutputLedger(args.output)
    stems = output_stems(files, sources, taken, occupied_prefixes(args.output, proof.recorded_size))
    owned = {stem for stem, source in zip(stems, sources) if taken.get(stem) == source}
    start_rows, todo = plan_run(args, earlier, position, stems, settings, paths)
    replaced = 0 if start_rows is None else len(earlier[0]) + len(earlier[2]) - len(start_rows)
    group.barrier()  # every process has read the summaries before rank 0 changes them
    if group.is_main:
        if start_rows is not None:
            write_summary(args.output / SUMMARY_NAME, start_rows)
            remove(leftover_parts(args.output))
        if args.resume:  # a killed run's temporary files: outputs, and summary.csv's and index.html's
            for folder in sorted({args.output} | {(args.output / stem).parent for stem in stems}):
                with contextlib.suppress(OSError):  # a sub-folder that is a link: nothing removed through it
                    remove_orphan_temporaries(folders.inside(args.output, folder))
    group.barrier()
    batches = [todo[start : start + args.batch_size] for start in range(0, len(todo), args.batch_size)]
    mine = [index for batch in group.shard(batches) for index in batch]
    summary = SummaryLog(part_path(args.output, group.rank) if group.distributed else args.output / SUMMARY_NAME)
    rows, error, interrupted, progress = [], None, False, None
    try:
        with cli.Progress(PROG, len(mine), show=group.is_main) as progress:
            for folder, reason in folder_errors if group.is_main else []:
                progress.fail(folder, reason)
            photos = [(paths[i], files[i], sources[i], stems[i]) for i in mine]
            process(photos, model, args, settings, summary, progress, owned, proof, rows)
    except SummaryError as e:
        error = str(e)
    except KeyboardInterrupt:  # one process: the table and report of what it finished, then exit 130
        if group.distributed or progress is None:
            raise
        interrupted = True
    finally:
        summary.close()
        for note in summary.notes:
            print(f"{PROG}: {shown(note)}", file=sys.stderr)
    shards = group.gather((rows, len(progress.failed), error))
    if not group.is_main:
        return None
    batch_of = {sources[index]: n // args.batch_size for n, index in enumerate(todo)}

    def order(row):
        return batch_of.get(row["source"], len(batches))

    if group.distributed:
        merge_parts(args.output, group.world_size, order)
    untidy = tidy_ledger(args.output)
    if untidy:
        print(f"{PROG}: {untidy}", file=sys.stderr)
    return (
        sorted((row for shard_rows, _, _ in shards for row in shard_rows), key=order),
        len(paths) - len(todo),
        sum(failed for _, failed, _ in shards),
        [error for _, _, error in shards if error],
        replaced,
        interrupted,
    )


def finish_run(args, base, done):
    """Rank 0, still holding the folder's lock: print the table and write the report."""
    rows, skipped, failed, summary_errors, replaced, interrupted = done
    for error in summary_errors:
        print(f"{PROG}: {shown(error)}", file=sys.stderr)
    if summary_errors:
        return cli.EXIT_FAILED
    if rows or not skipped:
        print_table(rows)
        trust = trust_statement(args.checkpoint)
        if trust:
            print(f"How far to trust these maps: {trust}")
        print(
            f"{len(rows) - sum(r['status'] != 'ok' for r in rows)} of {len(rows)} images done; heatmaps and "
            f"summary.csv in {shown(args.output)}"
            + (f"; {skipped} already done, skipped (--resume)" if skipped else "")
            + (f"; {replaced} row(s) of earlier runs for these photos replaced" if replaced > 0 else "")
            + (f"; {failed} failed (see stderr)" if failed else "")
        )
    else:
        print(
            f"nothing to do: {skipped} already done, skipped (--resume), every image of the input; heatmaps and "
            f"summary.csv in {shown(args.output)}"
        )
    # written by rank 0 after the merge: the report shows every process's rows
    if not args.no_report:
        try:
            page = report.write_report(args.output, args.output / SUMMARY_NAME, base, args.threshold, args.checkpoint)
        except report.ReportError as e:
            print(f"{PROG}: {shown(e)}", file=sys.stderr)
            return cli.EXIT_FAILED
        print(f"report: {shown(page)}")
    if interrupted:
        print(
            f"{PROG}: interrupted; the {len(rows)} photo(s) finished are in summary.csv and the report; --resume "
            "does the rest",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return cli.EXIT_FAILED if failed else cli.EXIT_OK


def print_table(rows):
    """The run's rows as a table on stdout; the file and size columns as wide as their longest entry."""
    sizes = [f"{row['width']}x{row['height']}" if row["width"] != "" else "-" for row in rows]
    name_width = max([32] + [len(shown(row["file"])) for row in rows])
    size_width = max([11] + [len(size) for size in sizes])
    print(
        f"{'file':<{name_width}} {'size':>{size_width}} {'mean r':>8} {'mean|r|':>8} {'%over':>7} {'%under':>7} "
        f"{'score':>6} {'stops':>6}  status"
    )
    for row, size in zip(rows, sizes):
        if row["status"] == "ok":
            numbers = (
                f"{row['mean_residual']:>8.4f} {row['mean_abs_residual']:>8.4f} {row['pct_over']:>7.2f} "
                f"{row['pct_under']:>7.2f} {row['score']:>6.3f} {row['stops']:>+6.2f}"
            )
        else:
            numbers = f"{'-':>8} {'-':>8} {'-':>7} {'-':>7} {'-':>6} {'-':>6}"
        print(f"{shown(row['file']):<{name_width}} {size:>{size_width}} {numbers}  {row['status']}")


def input_sources(args, default):
    """The inputs to read: --input's and the positional paths, or the folder ``default`` (img_to_pred/) when none is
    given (its absence is one line naming --input)."""
    if args.inputs:
        return args.inputs
    if not default.exists():
        raise cli.UsageError(
            f"no photos given and no {default.name}/ folder here; name them with --input PATH (files "
            "or folders, several allowed) or as paths after the options"
        )
    return [default]
