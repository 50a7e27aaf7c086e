"""Where the shipped checkpoint files are: a leaf (pathlib only), so the command line's options can name them in
--help without loading the models (models/ re-exports them for load_model and the tools)."""
from pathlib import Path

# the checkout's root, or the installed package's folder: both hold checkpoints/ beside utils/
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "pieanet_corpus.safetensors"
DEFAULT_ONNX = DEFAULT_CHECKPOINT.with_suffix(".onnx")  # the same network exported by export.py (onnxruntime backend)
