"""elastiq.lrec: low-rank error correction of packed models (EMEF training of LoRA adapters, LREC loss).

    targets = teacher_targets(float_model, tok, load_text("wiki-calib"))   # then the float model can go
    add_adapters(packed_model, rank=16, init="svd", float_model=float_model)
    # or both at once, one decoder layer at a time, never holding the whole float model:
    packed_model, targets = stream_setup(float_checkpoint_dir("smollm2-135m"), "int3", tok, text, rank=16)
    correct(packed_model, targets, steps=200)
    save_adapters(packed_model, "out/adapters")
"""
from elastiq.lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(["LoRALinear", "add_adapters", "adapters_of", "effective_bits", "merged_weight"], ".adapter"),
    **dict.fromkeys(["load_adapters", "save_adapters"], ".io"),
    "AdapterAdamW": ".optim",
    **dict.fromkeys(["StreamUnsupported", "stream_setup"], ".stream"),
    **dict.fromkeys(["TeacherTargets", "TrainLog", "correct", "distill_loss", "teacher_targets", "window_loss"], ".train"),
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
