"""elastiq.labs: tools around the core, not part of running a model.

``planning`` (how fast a model trains or serves on a cluster, and its carbon) and
``analysis`` (where a generative model's time goes, attention numerics at low precision,
bit-flip fault injection). They import the core (``formats``, ``quant``, ``models``,
``data``, ``cache``, ``progress``); the core never imports them. Their commands keep
their names (``elastiq perf``, ``carbon``, ``profile``, ``deviation``, ``faults``).
"""
