"""int8 model files: BatchNorm folding, ONNX QDQ, TFLite PT2E, QAT.

What gets quantized is the network only (log features ``[1, n_frames, bins]`` -> logits): the
spectral front end stays float on the host and int8 starts after log compression.

- ``fold_batchnorm``: every Conv-BN / Linear-BN pair becomes one Conv / Linear; a BatchNorm
  that follows no conv (the input normalisation) becomes a 1x1 depthwise conv with bias, so the
  int8 graph has no float islands. Exact up to float rounding.
- Calibration sets (``clips.calibration_windows``) come from the *training* data, at the
  positions the runtime itself scores.
- ONNX: ``quantize_onnx`` runs onnxruntime's ``quantize_static`` (QDQ format, per-channel
  symmetric int8 weights, asymmetric int8 activations, MinMax calibration). The file keeps
  float input and output: QuantizeLinear / DequantizeLinear sit at the edges of the graph.
- TFLite: ``quantize_tflite`` runs PT2E (torch.export -> prepare_pt2e -> calibrate ->
  convert_pt2e) with litert-torch's quantizer, extended so that data-movement ops (reshape,
  transpose, mean, max over axes) share the int8 parameters of their input, then
  ``litert_torch.convert``. The file has **int8 input and int8 output** with their scale and
  zero point in the tensors (and in the metadata under ``extra.quantization``): the
  microcontroller demo feeds int8 features straight from its C front end
  (``q = clamp(round(x / scale) + zero_point)``, see firmware_demo/gen_frontend_header.py) and
  the runtime's TFLite backend quantizes / dequantizes at the edges from the same parameters.
- ``qat_finetune``: quantization-aware fine-tuning (PT2E QAT, fake-quant) of the folded network
  for a few epochs; its weights then go through the same two writers.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeaudio.modelfile import ModelInfo

from .errors import ConversionError, ExportError, write_file
from .tflm import tflite_io_details
from .streaming import converter_call, example_call, input_names
from .writers import (add_tflite_metadata, conversion_error, converters_silenced, first_line,
                      set_onnx_metadata, write_onnx)


# --- BatchNorm folding -----------------------------------------------------------------------

def _bn_as_conv(bn: nn.BatchNorm2d) -> nn.Conv2d:
    """An eval-mode BatchNorm2d as the equal per-channel affine: a 1x1 depthwise conv."""
    c = bn.num_features
    conv = nn.Conv2d(c, c, 1, groups=c, bias=True)
    scale = (bn.weight if bn.affine else torch.ones(c)) / torch.sqrt(bn.running_var + bn.eps)
    shift = (bn.bias if bn.affine else torch.zeros(c)) - bn.running_mean * scale
    with torch.no_grad():
        conv.weight.copy_(scale.detach().view(c, 1, 1, 1))
        conv.bias.copy_(shift.detach())
    return conv


def fold_batchnorm(network: nn.Module) -> nn.Module:
    """A copy of ``network`` (eval mode) with every BatchNorm folded away; the input is untouched.

    Conv1d/Conv2d followed by BatchNorm inside an ``nn.Sequential`` and Linear followed by
    BatchNorm1d are fused; a BatchNorm2d elsewhere becomes a 1x1 depthwise conv. Raises
    ``ConversionError`` naming the layer for a BatchNorm it cannot place.
    """
    net = copy.deepcopy(network).eval()
    fuse = torch.nn.utils.fusion

    def visit(module: nn.Module, prefix: str):
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                a, b = module[i], module[i + 1]
                if isinstance(a, (nn.Conv1d, nn.Conv2d)) and isinstance(
                        b, (nn.BatchNorm1d, nn.BatchNorm2d)) and b.track_running_stats:
                    module[i] = fuse.fuse_conv_bn_eval(a, b)
                    module[i + 1] = nn.Identity()
                elif isinstance(a, nn.Linear) and isinstance(b, nn.BatchNorm1d) \
                        and b.track_running_stats:
                    module[i] = fuse.fuse_linear_bn_eval(a, b)
                    module[i + 1] = nn.Identity()
        for name, child in list(module.named_children()):
            path = f"{prefix}{name}"
            if isinstance(child, nn.BatchNorm2d):
                if not child.track_running_stats:
                    raise ConversionError(f"layer '{path}' (BatchNorm2d) keeps no running "
                                          "statistics and cannot be folded for export")
                setattr(module, name, _bn_as_conv(child))
            elif isinstance(child, (nn.BatchNorm1d, nn.BatchNorm3d)):
                raise ConversionError(f"layer '{path}' ({type(child).__name__}) follows no "
                                      "Conv/Linear layer and cannot be folded for export")
            else:
                visit(child, path + ".")

    visit(net, "")
    return net


# --- PT2E quantizer for TFLite ---------------------------------------------------------------

def _edge_quantizer(qat: bool = False):
    """litert-torch's PT2E quantizer (per-channel int8 weights, int8 activations), extended so
    that pure data-movement and order-preserving ops keep their input's int8 parameters: the
    graph then stays int8 from the input reshape to the logits (no float islands for TFLM)."""
    from litert_torch.quantize.pt2e_quantizer import (PT2EQuantizer,
                                                      get_symmetric_quantization_config)
    from torch.fx import Node
    from torchao.quantization.pt2e.quantizer import (QuantizationAnnotation,
                                                     SharedQuantizationSpec)

    aten = torch.ops.aten
    share = {aten.amax.default, aten.max.dim, aten.transpose.int, aten.permute.default,
             aten.view.default, aten.reshape.default, aten.mean.dim, aten.squeeze.dim,
             aten.squeeze.dims, aten.unsqueeze.default, aten.flatten.using_ints,
             aten.dropout.default, aten.clone.default, aten.relu.default,
             aten.max_pool2d.default, aten.contiguous.default, aten.pad.default,
             aten.constant_pad_nd.default, aten.slice.Tensor}
    own_range = {aten.hardswish.default, aten.hardswish_.default, aten.add.Tensor}

    class EdgeQuantizer(PT2EQuantizer):
        # BatchNorm is folded before quantization, so the QAT conv-BN patterns never match
        # (and their pattern tracing fails with this torch): skip them
        STATIC_QAT_ONLY_OPS = []

        def annotate(self, model):
            act = self.global_config.input_activation
            for n in model.graph.nodes:  # graph input -> data movement: quantize the input
                if n.op == "call_function" and n.target in share and n.args \
                        and isinstance(n.args[0], Node) and n.args[0].op == "placeholder":
                    n.meta["quantization_annotation"] = QuantizationAnnotation(
                        input_qspec_map={n.args[0]: act},
                        output_qspec=SharedQuantizationSpec((n.args[0], n)), _annotated=True)
            super().annotate(model)
            for n in model.graph.nodes:  # hardswish and the residual adds the base
                # quantizer leaves out (the mn students): int8 in and out, a range of their own
                inputs = [a for a in n.args if isinstance(a, Node)]
                if n.op == "call_function" and n.target in own_range and inputs \
                        and "quantization_annotation" not in n.meta:
                    n.meta["quantization_annotation"] = QuantizationAnnotation(
                        input_qspec_map={a: act for a in inputs},
                        output_qspec=self.global_config.output_activation, _annotated=True)
            for n in model.graph.nodes:  # in graph order, so chains of such ops propagate
                if n.op != "call_function" or n.target not in share:
                    continue
                ann = n.meta.get("quantization_annotation")
                if ann is not None and ann._annotated:
                    continue
                prev = n.args[0] if n.args else None
                prev_ann = prev.meta.get("quantization_annotation") \
                    if isinstance(prev, Node) else None
                if prev_ann is None or prev_ann.output_qspec is None:
                    continue
                n.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={prev: SharedQuantizationSpec(prev)},
                    output_qspec=SharedQuantizationSpec(prev), _annotated=True)
            return model

    return EdgeQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True,
                                                                         is_qat=qat))


def _batches(x: np.ndarray, size: int):
    for i in range(0, len(x), size):
        yield torch.from_numpy(np.ascontiguousarray(x[i:i + size]))


def _calls(calibration, info: ModelInfo):
    """Each calibration item as the (args, kwargs) of one call of ``converter_call``'s module:
    a window ``[n_frames, bins]``, or a streaming call's tuple of inputs."""
    if info.streaming is None:
        for x in _batches(calibration, 1):
            yield (x,), {}
        return
    names = input_names(info)
    for call in calibration:
        yield (), {n: torch.from_numpy(np.ascontiguousarray(a)) for n, a in zip(names, call)}


def _export_for_quantization(network: nn.Module, info: ModelInfo):
    module, args, kwargs = converter_call(network, info)
    try:
        return torch.export.export(module, args, kwargs).module()
    except Exception as exc:
        raise conversion_error(network, example_call(info), exc, "torch.export") from exc


def pt2e_calibrated(network: nn.Module, info: ModelInfo, calibration):
    """(quantizer, PT2E-converted module): the folded network with int8 Q/DQ from calibration
    (windows, or a streaming graph's calls: ``streaming.calibration_calls``)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    folded = fold_batchnorm(network)
    quantizer = _edge_quantizer()
    with converters_silenced():
        prepared = prepare_pt2e(_export_for_quantization(folded, info), quantizer)
        with torch.no_grad():
            for args, kwargs in _calls(calibration, info):
                prepared(*args, **kwargs)
        return quantizer, convert_pt2e(prepared, fold_quantize=False)


def _convert_tflite(module: nn.Module, quantizer, info: ModelInfo, original: nn.Module) -> bytes:
    import litert_torch
    from litert_torch.quantize.quant_config import QuantConfig

    _, args, kwargs = converter_call(original, info)  # module already has the call's form
    try:
        with converters_silenced():
            edge = litert_torch.convert(module, args, kwargs,
                                        quant_config=QuantConfig(pt2e_quantizer=quantizer))
            return bytes(edge.model_content())
    except Exception as exc:
        raise conversion_error(original, example_call(info), exc, "TFLite") from exc


def quantization_extra(tflite_bytes: bytes) -> dict:
    """The int8 parameters of the input and output, for the metadata (and the C front end)."""
    inp, out = tflite_io_details(tflite_bytes)
    return {"scheme": "int8 PT2E, per-channel weights", "input_dtype": inp["dtype"],
            "input_scale": inp["scale"], "input_zero_point": inp["zero_point"],
            "output_dtype": out["dtype"], "output_scale": out["scale"],
            "output_zero_point": out["zero_point"]}


def quantize_tflite(network: nn.Module, info: ModelInfo, calibration: np.ndarray, path,
                    prepared=None) -> Path:
    """Write an int8 .tflite (int8 input and output) of ``network`` with metadata.
    ``prepared``: (quantizer, PT2E-converted module), e.g. from ``qat_finetune``, instead of
    calibrating here."""
    path = Path(path)
    quantizer, module = prepared or pt2e_calibrated(network, info, calibration)
    data = _convert_tflite(module, quantizer, info, network)
    extra = dict(info.extra)
    extra["quantization"] = {**quantization_extra(data), "calibration_windows":
                             None if calibration is None else int(len(calibration))}
    write_file(path, add_tflite_metadata(data, _with_extra(info, extra)))
    return path


def _with_extra(info: ModelInfo, extra: dict) -> ModelInfo:
    new = copy.copy(info)
    new.extra = extra
    return new


# --- ONNX QDQ --------------------------------------------------------------------------------

def quantize_onnx(network: nn.Module, info: ModelInfo, calibration: np.ndarray, path,
                  float_onnx=None) -> Path:
    """Write an int8 QDQ .onnx (float input and output) of ``network`` with metadata.

    ``float_onnx``: an already written float file of the same folded network to start from.
    """
    import tempfile

    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    path = Path(path)

    class Reader(CalibrationDataReader):
        def __init__(self, name):
            self.items = iter([{name: x[None]} for x in calibration] if info.streaming is None
                              else [dict(zip(input_names(info), call)) for call in calibration])

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        tmp = Path(tmp)
        src = Path(float_onnx) if float_onnx else write_onnx(fold_batchnorm(network), info,
                                                             tmp / "float.onnx")
        pre = tmp / "pre.onnx"
        try:
            with converters_silenced():
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
                import onnx
                input_name = onnx.load(str(pre)).graph.input[0].name
                quantize_static(str(pre), str(tmp / "int8.onnx"), Reader(input_name),
                                quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                                calibrate_method=CalibrationMethod.MinMax)
        except Exception as exc:
            raise ConversionError(f"onnxruntime quantize_static failed: "
                                  f"{first_line(exc)}") from exc
        extra = dict(info.extra)
        extra["quantization"] = {"scheme": "int8 QDQ (onnxruntime quantize_static), "
                                           "per-channel weights, float input and output",
                                 "calibration_windows": int(len(calibration))}
        set_onnx_metadata(tmp / "int8.onnx", _with_extra(info, extra))
        write_file(path, (tmp / "int8.onnx").read_bytes())
    return path


# --- quantization-aware fine-tuning ----------------------------------------------------------

@dataclass
class QATResult:
    network: nn.Module        # folded float network with the fine-tuned weights (for ONNX)
    quantizer: object         # the PT2E quantizer used
    converted: nn.Module      # PT2E-converted module (int8 Q/DQ) for the TFLite writer
    losses: list


def qat_finetune(network: nn.Module, info: ModelInfo, x: np.ndarray, y: np.ndarray,
                 epochs: int = 2, lr: float = 1e-4, batch_size: int = 32, seed: int = 0,
                 calibration: np.ndarray | None = None) -> QATResult:
    """Quantization-aware fine-tuning of the BN-folded network on windows ``x`` with labels
    ``y`` (PT2E QAT: fake-quant on weights and activations, straight-through gradients)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    if info.streaming is not None:
        raise ExportError("quantization-aware fine-tuning is not built for streaming graphs; "
                          "export them with post-training quantization (--qat-epochs 0)")
    torch.manual_seed(seed)
    folded = fold_batchnorm(network)
    example = example_call(info)[0].expand(batch_size, -1, -1).contiguous()
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        exported = torch.export.export(folded, (example,), dynamic_shapes=({0: batch},)).module()
    except Exception as exc:
        raise conversion_error(network, example_call(info), exc, "torch.export") from exc
    quantizer = _edge_quantizer(qat=True)
    with converters_silenced():
        model = prepare_qat_pt2e(exported, quantizer)
    if calibration is not None:  # start the observers from calibration ranges
        with torch.no_grad():
            for xb in _batches(calibration, batch_size):
                model(xb)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(max(1, int(epochs))):
        order = rng.permutation(len(x))
        total, count = 0.0, 0
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            logits = model(torch.from_numpy(x[idx]))
            loss = nn.functional.cross_entropy(logits, torch.from_numpy(y[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
        losses.append(total / max(1, count))
    # the fine-tuned float weights, back into the module form (for the ONNX writer)
    tuned = copy.deepcopy(folded)
    state = model.state_dict()
    tuned.load_state_dict({k: state[k] for k in tuned.state_dict()})
    with converters_silenced():
        converted = convert_pt2e(model, fold_quantize=False)
    return QATResult(tuned.eval(), quantizer, converted, losses)
