"""A P-IEANet exported by export.py, run in onnxruntime behind the torch model's interface.

``load_model("model.onnx")`` returns an ``OnnxModel``: called on a B x 3 x H x W tensor it returns the B x 1 x H x W
residual, and it carries the attributes the inference code reads (``working_size``, ``receptive_radius``,
``tile_multiple``, ``config``), taken from the model config that export.py stores in the file's metadata. So working
resolution, guided upsampling and tiling (utils/inference.py) are the same code for both backends; only the network
runs in onnxruntime. A model with a scene branch is never tiled here: tiles of the torch model share one view of the
whole photo, which the exported graph cannot take as an input. CPU provider, or CUDA when asked for and onnxruntime
has it.
"""
import json
import math

import torch
import torch.nn as nn

CONFIG_KEY = "p_iea.config"  # written by export.py


class OnnxModel(nn.Module):
    def __init__(self, path, device="cpu", threads=None):
        super().__init__()
        try:
            import onnxruntime
        except ImportError:
            raise ValueError(f"{path}: an ONNX model needs onnxruntime (pip install -r requirements-export.txt)") \
                from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3  # warnings about unused initializers and the like are not the user's business
        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda":
            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                raise ValueError(f"{path}: this onnxruntime has no CUDA provider; use --device cpu")
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": torch.device(device).index or 0}))
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=providers)
            config = json.loads(self.session.get_modelmeta().custom_metadata_map[CONFIG_KEY])
        except KeyError:
            raise ValueError(f"{path}: an ONNX file without the P-IEA model config in its metadata; expected a file "
                             "written by export.py") from None
        except Exception as e:  # onnxruntime raises its own exception types for unreadable files
            raise ValueError(f"{path}: not a readable ONNX model ({str(e).splitlines()[0][:160]})") from None
        from pieanet.models import build_model  # the skeleton gives the attributes the inference code reads
        with torch.device("meta"):
            skeleton = build_model(config)
        self.config, self.path = config, str(path)
        for name in ("working_size", "receptive_radius", "tile_multiple", "native_size"):
            setattr(self, name, getattr(skeleton, name, None))
        if getattr(skeleton, "uses_scene", False):
            # the graph judges the scene from its own input, so a tile would see only itself: never tiled
            self.receptive_radius = math.inf

    def forward(self, x):
        residual, = self.session.run(["residual"], {"image": x.detach().float().cpu().numpy()})
        return torch.from_numpy(residual).to(x.device)

    def extra_repr(self):
        return f"{self.path}, config={self.config}"
