"""elastiq.labs.planning: before you spend money, how fast and how much carbon.

Pure arithmetic on model, system and task descriptions (no torch):

    from elastiq.labs.planning import perf, carbon
    r = perf.train("megatron-22b", "a100-80gb", perf.Parallel(tp=8, recompute="full"), batch=4, micro_batch=4)
    r.iteration_s, r.exposed_comm_fraction, r.mfu, r.memory.total_gib, r.fits

    carbon.device_embodied("dell-r740")         # ACT-style bill of materials, kg CO2e by component
    carbon.per_1k_tokens("llama-2-7b", "h100-80gb", weights="nvfp4", region="usa")["total_kg"]

Layering: imports elastiq.formats (bits per weight) and elastiq.cache (atomic writes) only.
"""
