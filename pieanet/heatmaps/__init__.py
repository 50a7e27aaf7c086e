"""make_heatmap's run as a library; make_heatmap.py parses the command line and calls run.make_heatmaps.

    run.py         the run: inputs, model (pieanet.runtime), the folder's lock, this process's share, table, report
    planning.py    the settings a photo's row records, the rows of earlier runs, which photos to do (--resume)
    processing.py  each batch read and predicted on a worker thread (overlap.py), its maps made and rows written
    writing.py     one photo's files (heatmap, overlay, colour bar, .npy), only over files the ledger proves ours
    ledger.py      ownership: the folder's record of the files the tool wrote (size and content hash)
    outputs.py     output names: the kinds of file per photo and their unique prefixes
    summary.py     summary.csv: columns, rows appended as photos finish, per-process parts and their merge
    report.py      index.html, built from summary.csv
This package imports nothing here, so summary.py, report.py and outputs.py load without torch (tests/test_layers.py).

Output names: <stem> is the photo's sub-folder and name without extension, made unique (outputs.output_stems) against
the other photos of the run and the photos of earlier runs in summary.csv, and stored in the photo's row (column
output; the kinds of file written in column output_kinds). A file in --output is the tool's only when its size and
content are those the folder's ledger recorded as the tool wrote it (ledger.py; a planted line proves nothing): a
user's file with an output's name is never removed or replaced (the photo gets another prefix), nothing is written or
removed through a symbolic link, and a user's index.html stops the run before any work (docs/safety.md, "Files and
folders"). summary.csv is appended to as each photo completes, so an interrupted run keeps the rows it finished; a
second run into the same folder first drops the earlier rows of the photos it does again (and says how many), so each
photo keeps one row, and adds its rows below those of the other photos.

Several processes (one per GPU or CPU socket, any number of nodes; utils/distributed.py), under torchrun: each process
takes every world_size-th batch of the sorted photos and appends its rows to summary.rank<k>.csv; at the end rank 0
adds them to summary.csv in the order one process would have written them, removes the parts, prints the one table
and exits 1 if a photo failed on any process. The outputs are those of one process. Parts a killed run left are taken
into summary.csv by the next run. With several nodes, --output must be a folder every node sees.

--resume skips a photo when summary.csv (or a part a killed torchrun run left) has a row with status ok for it, made
under the output name, for the photo's current content (column photo_sha256) and with the result-affecting settings
(column settings: the checkpoint's content, which also decides the backend, --size, --tile, --threshold, --vmax,
--raw-clipping, --jpeg-quality, --map, --alpha) this run would use, and every file the current options ask for exists
(so adding --overlay redoes every photo without one); the others are done again, each photo keeps one row, and
temporary files of killed processes are removed. Outputs are written atomically and a photo's row comes after its
files, so a killed run resumed this way writes the same files and rows as one uninterrupted run (with --batch-size 1;
larger batches may group the remaining photos differently).
"""
