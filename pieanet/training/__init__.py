"""Training (train_wavelet.py's library): the run (run.py: config, network, data, the loop, validation; ``command``
is the tool's whole run), its state on disk (state.py: experiment folder, last.pt, the provenance a checkpoint
records), the sampler (sampler.py), the config's schema (config.py, also ``python -m pieanet.training.config``) and
the two errors (errors.py). Nothing is imported here, so the schema runs without torch."""
