"""int8 serving on torch: every nn.Linear's weights rounded to int8 per output channel, each
pass's activations quantized on the fly (PyTorch's dynamic quantization, fbgemm / oneDNN kernels).

Why it pays for the backends CTranslate2 cannot express: at the batch sizes a server forms (1-8
questions), a greedy decoding step multiplies one row per question by every decoder weight, so
each generated character streams the decoder's weights from memory once. int8 weights stream a
quarter of the bytes: MemSizer's passes took about half the time at batch 1-8 (and 0.55x at 64),
the Performer's 0.6x; MemoryFormer, whose layers are table lookups, gained nothing
(benchmarks/REPORT.md, serving speed). As with CTranslate2's int8, the arithmetic depends on the
CPU's int8 kernel class (models/runtimes/cpu.py), so a checkpoint earns this runtime through evaluations
stored for that class (`training.evaluate --runtime torch-int8 --record NAME`).
"""
import warnings

import torch
from torch import nn


def quantize_linear_layers(model: nn.Module) -> nn.Module:
    """The model with every nn.Linear replaced, in place, by its dynamically quantized int8 form
    (weights per output channel); for inference on the CPU only."""
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("torch int8 (dynamic quantization) runs on the CPU only; load the model on the CPU")
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    with warnings.catch_warnings():
        # torch 2.13 points eager-mode quantization users to torchao; the API is still there and
        # torch is pinned, while torchao's CPU int8 path needs torch.compile to be fast
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(model.eval(), {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8,
                                inplace=True)
