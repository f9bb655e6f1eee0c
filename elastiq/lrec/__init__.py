"""elastiq.lrec: low-rank error correction of packed models (EMEF training of LoRA adapters, LREC loss).

    targets = teacher_targets(float_model, tok, load_text("wiki-calib"))   # then the float model can go
    add_adapters(packed_model, rank=16, init="svd", float_model=float_model)
    # or both at once, one decoder layer at a time, never holding the whole float model:
    packed_model, targets = stream_setup(float_checkpoint_dir("smollm2-135m"), "int3", tok, text, rank=16)
    correct(packed_model, targets, steps=200)
    save_adapters(packed_model, "out/adapters")
"""
from elastiq.options import LrecOptions

from .adapter import LoRALinear, add_adapters, adapters_of, effective_bits, merged_weight
from .io import load_adapters, save_adapters
from .optim import AdapterAdamW
from .stream import StreamUnsupported, stream_setup
from .train import TeacherTargets, TrainLog, correct, distill_loss, teacher_targets, window_loss

__all__ = ["AdapterAdamW", "LoRALinear", "LrecOptions", "StreamUnsupported", "TeacherTargets", "TrainLog", "add_adapters", "adapters_of",
           "correct", "distill_loss", "effective_bits", "load_adapters", "merged_weight", "save_adapters", "stream_setup",
           "teacher_targets", "window_loss"]
