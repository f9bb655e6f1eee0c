"""elastiq as a transformers quantization method:

    import elastiq.interop.hf_quantizer                      # registers "elastiq" with transformers
    from elastiq.interop.hf_quantizer import ElastiqConfig
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=ElastiqConfig(format="nxfp4", embedding="same"))
    model.save_pretrained("packed")                          # the packed bytes, and the config that says so
    model = AutoModelForCausalLM.from_pretrained("packed")   # packed again, no float copy of the weights

Loading a float checkpoint with the config loads it in float, then packs it with
``elastiq.quantize`` (the same call, so the same logits). Loading a saved one builds the
packed modules empty on the skeleton, and transformers fills their codes and scales.
The config records each packed module (format, shape, dtype, the embedding a head is
tied to) so that the skeleton can be built before any weight is read.
"""
from __future__ import annotations

import torch
from transformers.quantizers import HfQuantizer, register_quantization_config, register_quantizer
from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING
from transformers.utils.quantization_config import QuantizationConfigMixin

from elastiq import formats as F
from elastiq.errors import InputError
from elastiq.quant import QuantEmbedding, QuantLinear, quantize_model, replace_module, tied_heads, with_embedding
from elastiq.quant.io import check_module_meta, module_entries, weight_dtype

METHOD = "elastiq"


class ElastiqConfig(QuantizationConfigMixin):
    """``format``: the format of the linear layers (a name or a one-string spec);
    ``embedding``: also pack the token embedding (a format, or "same"); ``modules``: filled
    in when a model is packed, what a saved model holds."""

    def __init__(self, format: str = "nxfp4", embedding: str | None = None, modules: dict | None = None, **kwargs):
        self.quant_method = METHOD
        self.format = format
        self.embedding = embedding
        self.modules = modules
        self.post_init()

    def post_init(self):
        try:
            F.get(self.format)
            if self.embedding not in (None, "same"):
                F.get(self.embedding)
        except (ValueError, TypeError) as e:
            raise InputError(f"ElastiqConfig: {e}") from None


class ElastiqHfQuantizer(HfQuantizer):
    requires_calibration = False

    def update_dtype(self, dtype):
        return torch.float32 if dtype is None else dtype

    def validate_environment(self, device_map=None, **kwargs):
        if isinstance(device_map, dict) and any(str(d) not in ("cpu", "0") for d in device_map.values()):
            raise InputError("elastiq's packed layers load on one device: drop device_map")

    def _process_model_before_weight_loading(self, model, **kwargs):
        if not self.pre_quantized:
            return model
        modules = self.quantization_config.modules
        if not isinstance(modules, dict) or not modules:
            raise InputError("the checkpoint's elastiq quantization_config lists no packed modules: save it again")
        for name, meta in sorted(modules.items(), key=lambda kv: "tied_to" in kv[1]):  # embeddings before heads
            check_module_meta("quantization_config", name, meta)
            if meta.get("act_format"):
                raise InputError(f"quantization_config: {name} rounds its input ({meta['act_format']}), which the "
                                 "transformers route does not do: load it with elastiq.load")
            if "tied_to" in meta:  # shares the embedding's buffers: nothing of its own to load
                head = model.get_submodule(meta["tied_to"]).tied_head()
                head._non_persistent_buffers_set.update(b for b, _ in head.named_buffers())
                replace_module(model, name, head)
                continue
            empty = F.empty_packed(F.get(meta["format"]), meta["shape"], weight_dtype(meta["dtype"], name))
            old = model.get_submodule(name)
            if meta["kind"] == "embedding":
                replace_module(model, name, QuantEmbedding(empty, old.padding_idx))
            else:
                bias = None if old.bias is None else torch.empty(old.bias.shape, dtype=old.bias.dtype)
                replace_module(model, name, QuantLinear(empty, bias))
        untie(model, modules)
        return model

    def _process_model_after_weight_loading(self, model, **kwargs):
        config = self.quantization_config
        if self.pre_quantized:  # loading gave the embedding new buffers: the head shares those
            for name, meta in config.modules.items():
                if "tied_to" in meta:
                    replace_module(model, name, model.get_submodule(meta["tied_to"]).tied_head())
        else:
            quantize_model(model, with_embedding(model, config.format, config.embedding), progress=False)
            config.modules = module_entries(model)
            untie(model, config.modules)
        return model

    def get_state_dict_and_metadata(self, model):
        """The state without the tied head's copy of the embedding's packed buffers."""
        heads = set(tied_heads(model))
        state = {k: v for k, v in model.state_dict().items() if k.rpartition(".")[0] not in heads}
        return state, {}

    def is_serializable(self):
        return True

    @property
    def is_trainable(self):
        return True


def untie(model, modules: dict) -> None:
    """Drop transformers' weight ties that name a packed module: it has no ``weight`` to tie,
    and a packed head shares the embedding's buffers already."""
    packed = tuple(f"{m}." for m in modules)
    for attr in ("all_tied_weights_keys", "_tied_weights_keys"):  # the mapping, and what it is recomputed from
        ties = getattr(model, attr, None) or {}
        setattr(model, attr, {k: v for k, v in ties.items() if not (k.startswith(packed) or v.startswith(packed))})


if METHOD not in AUTO_QUANTIZATION_CONFIG_MAPPING:  # importing twice (a reload) registers once
    register_quantization_config(METHOD)(ElastiqConfig)
if METHOD not in AUTO_QUANTIZER_MAPPING:
    register_quantizer(METHOD)(ElastiqHfQuantizer)


def lora_config(**kwargs):
    """A peft ``LoraConfig`` whose LoRA layers can wrap elastiq's packed linear layers:
    peft's own LoRA ``Linear`` runs the base layer and adds the low-rank product, which is
    all a packed base needs (gradients reach the adapters, never the packed codes)."""
    from peft import LoraConfig
    from peft.tuners.lora.layer import Linear

    class PackedLoraLinear(Linear):
        def _get_base_layer_device_and_dtype(self, base_layer):  # peft reads .weight, a method here
            return base_layer.codes.device, base_layer.weight_dtype

    config = LoraConfig(**kwargs)
    config._register_custom_module({QuantLinear: PackedLoraLinear})  # peft's hook for layer types it does not know
    return config
