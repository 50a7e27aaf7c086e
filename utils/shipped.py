"""Where the shipped checkpoint files are: a leaf (pathlib only), so the command line's options can name them in
--help without loading the models (models/ re-exports them for load_model and the tools)."""

from pathlib import Path

# the checkout's root, or the installed package's folder: both hold checkpoints/ beside utils/
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "pieanet_corpus.safetensors"
DEFAULT_ONNX = DEFAULT_CHECKPOINT.with_suffix(".onnx")  # the same network exported by export.py (onnxruntime backend)
# how far to trust the shipped checkpoint, in plain words, with measured figures: written by
# `python bench/accuracy.py checkpoints/pieanet_corpus.safetensors --plain checkpoints/trust.txt` (README, "Results")
TRUST_FILE = DEFAULT_CHECKPOINT.parent / "trust.txt"


def trust_statement(checkpoint):
    """TRUST_FILE's sentences when ``checkpoint`` is the shipped checkpoint or its ONNX export, else '' (the figures
    are that network's; another one has not been measured). '' too when the file is absent or unreadable."""
    try:
        if checkpoint is None or Path(checkpoint).resolve() not in (DEFAULT_CHECKPOINT, DEFAULT_ONNX):
            return ""
        return TRUST_FILE.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError, ValueError):
        return ""
