"""Operator classes: which bucket an aten operator's time and FLOPs go to.

An operator's class comes from its name and from the module scope it runs in: a matmul
or softmax inside an attention module is attention (self, cross or temporal), the same
matmul elsewhere is linear/matmul; everything that runs inside a normalization module
(RMSNorm is pow, mean, rsqrt and mul) is normalization, except linear and convolution
(AdaLayerNorm holds linear layers).
"""
from __future__ import annotations

CONV = "conv"
LINEAR = "linear"
ATTN_SELF = "attn_self"
ATTN_CROSS = "attn_cross"
ATTN_TEMPORAL = "attn_temporal"
NORM = "norm"
ELEMENTWISE = "elementwise"
MEMORY = "memory"
OTHER = "other"

CLASSES = (CONV, LINEAR, ATTN_SELF, ATTN_CROSS, ATTN_TEMPORAL, NORM, ELEMENTWISE, MEMORY, OTHER)
ATTENTION = (ATTN_SELF, ATTN_CROSS, ATTN_TEMPORAL)
COMPRESSIBLE = (CONV, LINEAR)  # weights that elastiq formats pack
ATTENTION_KINDS = {"self": ATTN_SELF, "cross": ATTN_CROSS, "temporal": ATTN_TEMPORAL}

LABELS = {CONV: "convolution", LINEAR: "linear/matmul", ATTN_SELF: "attention: self",
          ATTN_CROSS: "attention: cross", ATTN_TEMPORAL: "attention: temporal", NORM: "normalization",
          ELEMENTWISE: "elementwise/activation", MEMORY: "memory movement", OTHER: "other"}

_CONV = {"conv1d", "conv2d", "conv3d", "convolution", "_convolution", "conv_transpose1d", "conv_transpose2d",
         "conv_transpose3d", "mkldnn_convolution", "cudnn_convolution", "_convolution_mode", "slow_conv3d",
         "thnn_conv2d", "_slow_conv2d_forward", "_nnpack_spatial_convolution", "convolution_overrideable"}
_MATMUL = {"linear", "matmul", "mm", "addmm", "bmm", "baddbmm", "einsum", "dot", "mv", "addmv", "addbmm",
           "_addmm_activation", "tensordot", "_mkl_linear", "mkldnn_linear"}
_SDPA_PREFIXES = ("scaled_dot_product", "_scaled_dot_product", "_flash_attention", "_efficient_attention",
                  "_fused_sdp", "flex_attention", "_native_multi_head_attention")
_SOFTMAX = {"softmax", "_softmax", "log_softmax", "_log_softmax", "_safe_softmax"}
_NORM = {"group_norm", "native_group_norm", "layer_norm", "native_layer_norm", "batch_norm", "native_batch_norm",
         "_batch_norm_impl_index", "instance_norm", "rms_norm", "_fused_rms_norm", "_native_batch_norm_legit",
         "_native_batch_norm_legit_no_training", "_batch_norm_with_update", "_batch_norm_no_update"}
_MEMORY = {"copy_", "clone", "contiguous", "cat", "stack", "to", "_to_copy", "view", "reshape", "_reshape_alias",
           "permute", "transpose", "t", "expand", "repeat", "repeat_interleave", "chunk", "split", "split_with_sizes",
           "unbind", "narrow", "slice", "select", "index_select", "gather", "index", "index_put_", "flatten",
           "unflatten", "squeeze", "unsqueeze", "constant_pad_nd", "pad", "upsample_nearest1d", "upsample_nearest2d",
           "upsample_nearest3d", "_upsample_nearest_exact2d", "upsample_bilinear2d", "interpolate", "empty",
           "empty_like", "empty_strided", "zeros", "zeros_like", "ones", "ones_like", "full", "new_zeros",
           "new_empty", "fill_", "zero_", "as_strided", "detach", "alias", "_unsafe_view", "movedim", "roll",
           "flip", "resize_", "masked_select", "where", "tril", "triu", "arange", "lift_fresh"}
_OTHER = {"embedding", "multinomial", "argmax", "topk", "sort", "nonzero", "item", "_local_scalar_dense",
          "randn", "rand", "normal_", "uniform_", "bernoulli_", "randint"}


def op_name(name: str) -> str:
    """'aten::addmm' / 'aten.addmm.default' -> 'addmm'."""
    name = name.split("::")[-1]
    if name.startswith("aten."):
        name = name[5:]
    return name.split(".")[0]


def is_sdpa(op: str) -> bool:
    return op.startswith(_SDPA_PREFIXES)


def is_attention_core(op: str) -> bool:
    """Operators that compute attention itself when they run inside an attention module."""
    return is_sdpa(op) or op in _MATMUL or op in _SOFTMAX


def classify(name: str, attention: str | None = None, in_norm: bool = False) -> str:
    """The class of an operator. attention: 'self', 'cross' or 'temporal' when the operator runs
    inside an attention module but outside its linear projections; in_norm: inside a norm module."""
    op = op_name(name)
    if op in _CONV:
        return CONV
    if op == "linear" or op in ("_mkl_linear", "mkldnn_linear"):
        return LINEAR  # projections stay linear even inside attention modules
    if attention is not None and is_attention_core(op):
        return ATTENTION_KINDS[attention]
    if is_sdpa(op):
        return ATTN_SELF  # attention outside any known attention module: no way to tell, call it self
    if op in _MATMUL:
        return LINEAR
    if in_norm or op in _NORM:
        return NORM
    if op in _MEMORY:
        return MEMORY
    if op in _OTHER:
        return OTHER
    return ELEMENTWISE if _is_pointwise(op) else OTHER


_POINTWISE = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "silu", "silu_", "gelu", "gelu_", "relu",
              "relu_", "sigmoid", "tanh", "exp", "log", "pow", "rsqrt", "sqrt", "neg", "abs", "sin", "cos", "mean",
              "sum", "amax", "max", "min", "clamp", "clamp_", "softplus", "mish", "erf", "addcmul", "addcdiv", "lerp",
              "rsub", "reciprocal", "square", "var", "std", "var_mean", "floor", "ceil", "round", "sign", "eq", "ne",
              "lt", "le", "gt", "ge", "logical_not", "logical_and", "logical_or", "bitwise_not", "masked_fill",
              "masked_fill_", "hardswish", "leaky_relu", "elu", "glu", "cumsum", "_log_softmax",
              "linalg_vector_norm", "norm", "maximum", "minimum", "isnan", "isinf", "nan_to_num", "all", "any",
              "fmod", "remainder", "exp2", "expm1", "log1p", "hardtanh", "threshold", "dropout", "native_dropout",
              "feature_dropout", "type_as", "float", "half", "bfloat16", "_softmax", "softmax", "log_softmax",
              "_safe_softmax", "scalar_tensor", "add_relu", "clamp_min", "clamp_max", "prod", "cumprod", "silu_backward"}


def _is_pointwise(op: str) -> bool:
    return op in _POINTWISE or op.rstrip("_") in _POINTWISE
