"""A P-IEANet exported by export.py, run in onnxruntime behind the torch model's interface.

``load_model("model.onnx")`` returns an ``OnnxModel``: called on a B x 3 x H x W tensor it returns the B x 1 x H x W
residual, and it declares what models/contract.py reads (``working_size``, ``receptive_radius``, ``tile_multiple``,
``native_size``, ``uses_scene``, ``config``), taken from the model config that export.py stores in the file's metadata.
So working resolution, guided upsampling and tiling (models/inference.py) are the same code for both backends; only
the network runs in onnxruntime. A model with a scene branch declares a whole-image receptive field, so it is never
tiled: tiles of the torch model share one view of the whole photo, which the exported graph cannot take as an input.

Providers: the CPU, or onnxruntime's CUDA provider for a CUDA device (on that device's index, so each torchrun process
uses its own GPU). The CPU-only onnxruntime package has no CUDA provider (onnxruntime-gpu has): then a CUDA device the
user named (--device cuda) is an error, and one chosen automatically (--device auto) gives the CPU provider. The
network runs outside autograd: no gradient reaches its input (``forward`` refuses an input that asks for one).
"""

import json
import math

import torch
import torch.nn as nn

from pieanet.models import contract
from pieanet.utils.safety import first_line

CONFIG_KEY = contract.ONNX_CONFIG_KEY  # written by export.py
# an installed copy has no requirements file: the package by name first
INSTALL = (
    "pip install onnxruntime (onnxruntime-gpu for CUDA; in the P-IEA checkout: pip install -r "
    "requirements-export.txt, or pip install '.[export]' for the package)"
)


def execution_providers(path, device, explicit_device, available):
    """onnxruntime's providers for ``device`` (a torch.device), given the ``available`` ones: the CPU provider, led
    by the CUDA provider on the device's index for a CUDA device. A CUDA device without the CUDA provider falls back
    to the CPU when it was chosen automatically; when it was named (``explicit_device``) that raises ValueError."""
    if device.type != "cuda":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        if explicit_device:
            raise ValueError(
                f"{path}: --device {device} was asked for, but this onnxruntime has no CUDA provider "
                "(the onnxruntime-gpu package has it); use --device cpu or auto"
            )
        return ["CPUExecutionProvider"]
    return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]


class OnnxModel(nn.Module):
    def __init__(self, path, device="cpu", explicit_device=True):
        """device: where to run (torch.device or its name). explicit_device: whether the user named it, so that a
        CUDA device this onnxruntime cannot run on is an error, not a fall-back to the CPU (``execution_providers``)."""
        super().__init__()
        try:
            import onnxruntime
        except ImportError as e:
            raise ValueError(f"{path}: an ONNX model needs onnxruntime: {INSTALL}") from e
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # --threads, as for torch
        options.log_severity_level = 3  # warnings about unused initializers and the like are not the user's business
        providers = execution_providers(
            path, torch.device(device), explicit_device, onnxruntime.get_available_providers()
        )
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=providers)
            config = json.loads(self.session.get_modelmeta().custom_metadata_map[CONFIG_KEY])
        except KeyError as e:
            raise ValueError(
                f"{path}: an ONNX file without the P-IEA model config in its metadata; expected a file "
                "written by export.py"
            ) from e
        except Exception as e:  # onnxruntime raises its own exception types for unreadable files
            raise ValueError(f"{path}: not a readable ONNX model ({first_line(e)})") from e
        from pieanet.models import CheckpointError, build_model, check_activations  # the skeleton gives the

        try:  # attributes inference reads
            with torch.device("meta"):
                skeleton = build_model(config)
            check_activations(path, config, skeleton)
        except CheckpointError:
            raise
        except (TypeError, ValueError, AssertionError, RuntimeError, ZeroDivisionError) as e:
            raise ValueError(f"{path}: unusable model config in its metadata ({first_line(e)})") from e
        self.config, self.path = config, str(path)
        # the torch model's declarations (models/contract.py), but for the scene: the graph judges the scene from its
        # own input and takes none from outside, so its output at a pixel depends on the whole input
        self.working_size, self.tile_multiple = contract.working_size(skeleton), contract.tile_multiple(skeleton)
        self.native_size = contract.native_size(skeleton)
        self.receptive_radius = math.inf if contract.uses_scene(skeleton) else contract.receptive_radius(skeleton)
        self.uses_scene = False

    def forward(self, x):
        if x.requires_grad and torch.is_grad_enabled():
            raise RuntimeError(
                f"{self.path}: an ONNX model runs in onnxruntime and passes no gradient to its input; "
                "for a loss or anything else that needs one, load the torch checkpoint "
                "(.safetensors) instead"
            )
        try:
            (residual,) = self.session.run(["residual"], {"image": x.detach().float().cpu().numpy()})
        except Exception as e:  # onnxruntime's own types (Fail, InvalidArgument, RuntimeException: out of memory, a
            # graph with fixed input dimensions): one photo's failure, as torch's RuntimeError is
            # (pieanet.runtime.predict)
            raise RuntimeError(f"onnxruntime: {first_line(e, 200)}") from e
        return torch.from_numpy(residual).to(x.device)

    def extra_repr(self):
        return f"{self.path}, config={self.config}"
